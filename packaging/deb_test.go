// Package packaging holds the Debian package builds (build-deb.sh and the
// maintainer scripts for ikefrag; build-plugin-deb.sh for
// strongswan-plugin-ikefrag, the ikefrag-keys charon plugin); its tests
// build them with `make deb` and `make deb-plugin`, check what they hold
// and install them on a clean Debian 12 root.
package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

// buildDeb runs make deb with a given Debian version into a temporary
// directory and returns the package's path.
func buildDeb(t *testing.T, debVersion string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "..", "deb", "DEBDIR="+out, "BIN="+filepath.Join(out, "bin"))
	cmd.Env = append(os.Environ(), "DEB_VERSION="+debVersion)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, b)
	}
	m, _ := filepath.Glob(filepath.Join(out, "ikefrag_*.deb"))
	if len(m) != 1 {
		t.Fatalf("make deb made %v\n%s", m, b)
	}
	return m[0]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(b)
}

// make deb builds ikefrag_<version>_<arch>.deb holding the binaries
// (stamped with the version), the unit and its proxy drop-in, the
// configuration as the only conffile, man pages, completions, dashboard
// and rules, and the maintainer scripts.
func TestDebContents(t *testing.T) {
	need(t, "make", "go", "dpkg-deb", "git")
	// Read before the build, as make reads it.
	describe := strings.TrimSpace(run(t, "git", "describe", "--tags", "--always", "--dirty"))
	deb := buildDeb(t, "1.2.3+test1")
	if base := filepath.Base(deb); !strings.HasPrefix(base, "ikefrag_1.2.3+test1_") || !strings.HasSuffix(base, ".deb") {
		t.Errorf("package file name %s", base)
	}
	for field, want := range map[string]string{"Package": "ikefrag", "Version": "1.2.3+test1", "Section": "net"} {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); got != want {
			t.Errorf("control %s: %q, want %q", field, got, want)
		}
	}
	listing := run(t, "dpkg-deb", "-c", deb)
	files := map[string]string{} // path → mode
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(l)
		files[strings.TrimPrefix(f[len(f)-1], ".")] = f[0]
	}
	for path, mode := range map[string]string{
		"/usr/sbin/ikefragd":                                              "-rwxr-xr-x",
		"/usr/bin/ikefragctl":                                             "-rwxr-xr-x",
		"/etc/ikefrag/ikefragd.yaml":                                      "-rw-r--r--",
		"/lib/systemd/system/ikefragd.service":                            "-rw-r--r--",
		"/lib/systemd/system/ikefragd.service.d/proxy.conf":               "-rw-r--r--",
		"/usr/share/man/man8/ikefragd.8.gz":                               "-rw-r--r--",
		"/usr/share/man/man1/ikefragctl.1.gz":                             "-rw-r--r--",
		"/usr/share/man/man1/ikefragctl-analyze.1.gz":                     "-rw-r--r--",
		"/usr/share/bash-completion/completions/ikefragctl":               "-rw-r--r--",
		"/usr/share/bash-completion/completions/ikefragd":                 "-rw-r--r--",
		"/usr/share/zsh/vendor-completions/_ikefragctl":                   "-rw-r--r--",
		"/usr/share/fish/vendor_completions.d/ikefragctl.fish":            "-rw-r--r--",
		"/usr/share/ikefrag/grafana/dashboards/ikefrag.json":              "-rw-r--r--",
		"/usr/share/ikefrag/grafana/provisioning/dashboards/ikefrag.yaml": "-rw-r--r--",
		"/usr/share/ikefrag/prometheus/ikefrag-rules.yml":                 "-rw-r--r--",
		"/usr/share/doc/ikefrag/copyright":                                "-rw-r--r--",
		"/":                                                               "drwxr-xr-x",
	} {
		if got, ok := files[path]; !ok || got != mode {
			t.Errorf("%s: %q (present %v), want %s", path, got, ok, mode)
		}
	}
	if strings.Contains(listing, "gen-docs") {
		t.Errorf("the hidden generator leaked into the package:\n%s", listing)
	}

	x := t.TempDir()
	run(t, "dpkg-deb", "-R", deb, x)
	conffiles, _ := os.ReadFile(filepath.Join(x, "DEBIAN/conffiles"))
	if string(conffiles) != "/etc/ikefrag/ikefragd.yaml\n" {
		t.Errorf("conffiles: %q", conffiles)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		fi, err := os.Stat(filepath.Join(x, "DEBIAN", s))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("DEBIAN/%s: %v %v", s, fi, err)
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(x, "DEBIAN", s)).CombinedOutput(); err != nil {
			t.Errorf("DEBIAN/%s does not parse: %s", s, out)
		}
	}
	postrm, _ := os.ReadFile(filepath.Join(x, "DEBIAN/postrm"))
	if !bytes.Contains(postrm, []byte("rm -rf /etc/ikefrag /run/ikefrag")) {
		t.Errorf("postrm does not purge the directories:\n%s", postrm)
	}
	unit, _ := os.ReadFile(filepath.Join(x, "lib/systemd/system/ikefragd.service"))
	if !bytes.Contains(unit, []byte("ExecStart=/usr/sbin/ikefragd --config /etc/ikefrag/ikefragd.yaml")) {
		t.Errorf("packaged unit does not start /usr/sbin/ikefragd")
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		// The packaged unit verifies against the packaged binary.
		u := filepath.Join(t.TempDir(), "ikefragd.service")
		_ = os.WriteFile(u, bytes.ReplaceAll(unit, []byte("/usr/sbin/ikefragd"), []byte(filepath.Join(x, "usr/sbin/ikefragd"))), 0o644)
		if out, err := exec.Command(analyze, "verify", "--man=no", u).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify of the packaged unit: %v\n%s", err, out)
		}
	}
	// The binaries are stamped with git describe, and static.
	v := run(t, filepath.Join(x, "usr/bin/ikefragctl"), "--version")
	if !strings.HasPrefix(v, "ikefragctl "+describe+" (") {
		t.Errorf("packaged ikefragctl --version: %q, want git describe %q", v, describe)
	}
	if d := run(t, filepath.Join(x, "usr/sbin/ikefragd"), "--version"); !strings.HasPrefix(d, "ikefragd "+describe+" (") {
		t.Errorf("packaged ikefragd --version: %q", d)
	}
	if out, _ := exec.Command("file", filepath.Join(x, "usr/sbin/ikefragd")).Output(); len(out) > 0 && !bytes.Contains(out, []byte("statically linked")) {
		t.Errorf("ikefragd is not static: %s", out)
	}
	man, _ := exec.Command("sh", "-c", "gzip -dc "+filepath.Join(x, "usr/share/man/man1/ikefragctl-analyze.1.gz")).Output()
	if !bytes.Contains(man, []byte(".TH \"IKEFRAGCTL-ANALYZE\" \"1\"")) || !bytes.Contains(man, []byte("--severity")) {
		t.Errorf("ikefragctl-analyze.1 is not the analyze man page:\n%.400s", man)
	}
	bash, _ := os.ReadFile(filepath.Join(x, "usr/share/bash-completion/completions/ikefragctl"))
	if !bytes.Contains(bash, []byte("__start_ikefragctl")) {
		t.Errorf("bash completion of ikefragctl looks wrong: %.200s", bash)
	}
}

// The Debian version follows git describe.
func TestDebVersion(t *testing.T) {
	need(t, "sh", "git")
	for in, want := range map[string]string{
		"v1.2.3":                  "1.2.3",
		"v1.2.3-4-gabc1234":       "1.2.3+4.gabc1234",
		"v1.2.3-4-gabc1234-dirty": "1.2.3+4.gabc1234+dirty",
		"1.0.0-rc1":               "1.0.0+rc1",
	} {
		got := debVersion(t, in)
		if got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
	if got := debVersion(t, "abc1234-dirty"); !strings.HasPrefix(got, "0.0~git") || !strings.HasSuffix(got, ".abc1234+dirty") {
		t.Errorf("untagged: %s", got)
	}
}

// debVersion runs build-deb.sh's debversion function.
func debVersion(t *testing.T, v string) string {
	t.Helper()
	b, err := os.ReadFile("build-deb.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "debversion() {")
	end := strings.Index(s[start:], "\n}\n") + start + 3
	fn := s[start:end]
	out, err := exec.Command("sh", "-c", "here=..\n"+fn+"debversion \"$1\"", "sh", v).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// The package on a clean bookworm root (packaging/chroot-test.sh): apt
// install, upgrade to a newer build keeping an edited configuration and a
// unit override, purge leaving nothing. It needs root and the bookworm
// tarball mmdebstrap makes once (from the Debian mirror): it runs when the
// tarball is cached or IKEFRAG_DEB_CHROOT=1 allows making it.
func TestDebChrootLifecycle(t *testing.T) {
	need(t, "make", "go", "dpkg-deb", "chroot", "tar")
	if os.Geteuid() != 0 {
		t.Skip("needs root (chroot)")
	}
	if _, err := os.Stat("/var/cache/ikefrag-chroot/bookworm.tar"); err != nil && os.Getenv("IKEFRAG_DEB_CHROOT") != "1" {
		t.Skip("no cached bookworm root; IKEFRAG_DEB_CHROOT=1 makes one with mmdebstrap (downloads from the Debian mirror)")
	}
	old := buildDeb(t, "1.0.0+chroot1")
	newer := buildDeb(t, "1.0.0+chroot2")
	out, err := exec.Command("./chroot-test.sh", old, newer).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("chroot-test.sh: %v", err)
	}
	if !bytes.Contains(out, []byte("edited configuration and unit override kept")) || !bytes.Contains(out, []byte("purged: nothing left")) {
		t.Errorf("chroot-test.sh did not report both checks")
	}
}

// pluginPrereqs skips unless the ikefrag-keys plugin can be built here:
// strongSwan installed, and the plugin cached or root to build it (the
// first build fetches Debian's strongswan source).
func pluginPrereqs(t *testing.T) {
	t.Helper()
	need(t, "make", "dpkg-deb", "dpkg-query", "dpkg-shlibdeps", "git", "nm")
	if _, err := exec.Command("dpkg-query", "-W", "strongswan-libcharon").Output(); err != nil {
		t.Skip("strongSwan (strongswan-libcharon) is not installed")
	}
	if os.Geteuid() != 0 && exec.Command("../keys/strongswan-plugin/build.sh", "--check").Run() != nil {
		t.Skip("the ikefrag-keys plugin is not cached and building it needs root")
	}
}

// buildPluginDeb runs make deb-plugin with a given ikefrag Debian version
// into a temporary directory and returns the package's path.
func buildPluginDeb(t *testing.T, debVersion string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "..", "deb-plugin", "DEBDIR="+out)
	cmd.Env = append(os.Environ(), "DEB_VERSION="+debVersion)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb-plugin: %v\n%s", err, b)
	}
	m, _ := filepath.Glob(filepath.Join(out, "strongswan-plugin-ikefrag_*.deb"))
	if len(m) != 1 {
		t.Fatalf("make deb-plugin made %v\n%s", m, b)
	}
	return m[0]
}

// make deb-plugin builds strongswan-plugin-ikefrag: the plugin in the
// directory where Debian's strongSwan packages put charon's plugins, its
// strongswan.d snippet as the only conffile, and a Depends on exactly the
// installed version of the package that ships libcharon.
func TestPluginDebContents(t *testing.T) {
	pluginPrereqs(t)
	deb := buildPluginDeb(t, "1.2.3+test1")

	// The package that ships libcharon, and its version, as dpkg knows them.
	owner := strings.TrimSpace(run(t, "dpkg-query", "-S", "/usr/lib/ipsec/libcharon.so.0"))
	charonPkg, _, ok := strings.Cut(owner, ":")
	if !ok {
		t.Fatalf("dpkg-query -S libcharon.so.0: %q", owner)
	}
	charonVer := run(t, "dpkg-query", "-W", "-f=${Version}", charonPkg)
	arch := strings.TrimSpace(run(t, "dpkg", "--print-architecture"))
	wantVersion := "1.2.3+test1-ss" + strings.NewReplacer("-", "+", ":", ".").Replace(charonVer)
	if base, want := filepath.Base(deb), "strongswan-plugin-ikefrag_"+wantVersion+"_"+arch+".deb"; base != want {
		t.Errorf("package file name %s, want %s", base, want)
	}
	for field, want := range map[string]string{
		"Package":      "strongswan-plugin-ikefrag",
		"Version":      wantVersion,
		"Architecture": arch,
		"Source":       "ikefrag (1.2.3+test1)",
		"Section":      "net",
	} {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); got != want {
			t.Errorf("control %s: %q, want %q", field, got, want)
		}
	}
	depends := strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Depends")), ", ")
	if want := charonPkg + " (= " + charonVer + ")"; depends[0] != want {
		t.Errorf("Depends %q: first should be %q", depends, want)
	}
	hasLibc := false
	for _, d := range depends {
		hasLibc = hasLibc || strings.HasPrefix(d, "libc6 (>= ")
	}
	if !hasLibc {
		t.Errorf("Depends %q lacks libc6 (from dpkg-shlibdeps)", depends)
	}
	if bu := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Built-Using")); !strings.HasPrefix(bu, "strongswan (= 5") {
		t.Errorf("Built-Using: %q, want the strongswan source version", bu)
	}

	// charon's plugin directory is where Debian's own plugins are.
	plugdir := ""
	for _, f := range strings.Split(run(t, "dpkg-query", "-L", "libstrongswan"), "\n") {
		if strings.HasSuffix(f, "/libstrongswan-aes.so") {
			plugdir = filepath.Dir(f)
		}
	}
	if plugdir == "" {
		t.Fatal("libstrongswan ships no libstrongswan-aes.so: where are charon's plugins?")
	}
	so := plugdir + "/libstrongswan-ikefrag-keys.so"
	conf := "/etc/strongswan.d/charon/ikefrag-keys.conf"
	listing := run(t, "dpkg-deb", "-c", deb)
	files := map[string]string{} // path → mode and owner
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(l)
		files[strings.TrimSuffix(strings.TrimPrefix(f[len(f)-1], "."), "/")] = f[0] + " " + f[1]
	}
	want := map[string]string{
		so:   "-rw-r--r-- root/root",
		conf: "-rw-r--r-- root/root",
		"/usr/share/doc/strongswan-plugin-ikefrag/copyright":    "-rw-r--r-- root/root",
		"/usr/share/doc/strongswan-plugin-ikefrag/keys.md":      "-rw-r--r-- root/root",
		"/usr/share/doc/strongswan-plugin-ikefrag/changelog.gz": "-rw-r--r-- root/root",
	}
	for path, mode := range want {
		if got, ok := files[path]; !ok || got != mode {
			t.Errorf("%s: %q (present %v), want %s", path, got, ok, mode)
		}
	}
	for path, mode := range files {
		if _, ok := want[path]; !ok && !strings.HasPrefix(mode, "drwxr-xr-x root/root") {
			t.Errorf("unexpected %s %s in the package", mode, path)
		}
	}

	x := t.TempDir()
	run(t, "dpkg-deb", "-R", deb, x)
	if c, _ := os.ReadFile(filepath.Join(x, "DEBIAN/conffiles")); string(c) != conf+"\n" {
		t.Errorf("conffiles: %q", c)
	}
	// md5sums covers every file, each with its sum.
	sums, _ := os.ReadFile(filepath.Join(x, "DEBIAN/md5sums"))
	listed := 0
	for _, l := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, path, ok := strings.Cut(l, "  ")
		if !ok {
			t.Errorf("md5sums line %q", l)
			continue
		}
		listed++
		got := strings.Fields(run(t, "md5sum", filepath.Join(x, path)))[0]
		if got != sum {
			t.Errorf("md5sums: %s is %s, the file's %s", path, sum, got)
		}
	}
	if listed != len(want) {
		t.Errorf("md5sums lists %d files, the package holds %d:\n%s", listed, len(want), sums)
	}

	// The snippet loads the plugin and points it at the key socket path
	// that ikefragd's configuration documents.
	snippet, _ := os.ReadFile(filepath.Join(x, conf))
	if !bytes.HasPrefix(snippet, []byte("ikefrag-keys {\n")) || !bytes.Contains(snippet, []byte("\n    load = yes\n")) {
		t.Errorf("%s does not load the plugin:\n%s", conf, snippet)
	}
	const sock = "/run/ikefrag/keys/keys.sock"
	if !bytes.Contains(snippet, []byte("\n    socket = "+sock+"\n")) {
		t.Errorf("%s does not set socket = %s:\n%s", conf, sock, snippet)
	}
	if cfg, _ := os.ReadFile("../configs/ikefragd.yaml"); !bytes.Contains(cfg, []byte(sock)) {
		t.Errorf("configs/ikefragd.yaml no longer names %s for keys.socket: keep the plugin's snippet in step", sock)
	}

	// The plugin itself: charon's constructor, stripped.
	if syms := run(t, "nm", "-D", "--defined-only", filepath.Join(x, so)); !strings.Contains(syms, " ikefrag_keys_plugin_create\n") {
		t.Errorf("the packaged plugin lacks ikefrag_keys_plugin_create")
	}
	if out, _ := exec.Command("file", filepath.Join(x, so)).Output(); len(out) > 0 && !bytes.Contains(out, []byte(", stripped")) {
		t.Errorf("the packaged plugin is not stripped: %s", out)
	}

	// Debian's package checker, where installed: no errors. (Its one
	// warning, package-has-long-file-name, comes with the version.)
	if lintian, err := exec.LookPath("lintian"); err == nil {
		out, _ := exec.Command(lintian, "--tag-display-limit", "0", deb).CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "E: ") {
				t.Errorf("lintian: %s", l)
			}
		}
	}
}

// strongswan-plugin-ikefrag on a clean bookworm root with Debian's
// strongSwan of the installed version (packaging/plugin-chroot-test.sh):
// apt install, charon loading the plugin by the packaged snippet and
// connecting to the packaged socket path, upgrade keeping an edited
// snippet, remove and purge leaving nothing. Needs root and the bookworm
// tarball of TestDebChrootLifecycle; the root with strongSwan is made once
// from the host's Debian mirrors and cached.
func TestPluginDebChrootLifecycle(t *testing.T) {
	pluginPrereqs(t)
	need(t, "chroot", "tar", "unshare", "python3")
	if os.Geteuid() != 0 {
		t.Skip("needs root (chroot)")
	}
	if _, err := os.Stat("/var/cache/ikefrag-chroot/bookworm.tar"); err != nil {
		t.Skip("no cached bookworm root; TestDebChrootLifecycle with IKEFRAG_DEB_CHROOT=1 makes one")
	}
	old := buildPluginDeb(t, "1.0.0+chroot1")
	newer := buildPluginDeb(t, "1.0.0+chroot2")
	out, err := exec.Command("./plugin-chroot-test.sh", old, newer).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("plugin-chroot-test.sh: %v", err)
	}
	for _, want := range []string{
		"charon loaded the plugin: ikefrag-keys: connected to '/run/ikefrag/keys/keys.sock'",
		"edited conffile kept",
		"purged: nothing left",
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("plugin-chroot-test.sh did not report %q", want)
		}
	}
}
