package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ikefrag/ikefrag/cmd/internal/keytable"
	"github.com/ikefrag/ikefrag/keys"
	"github.com/ikefrag/ikefrag/netcfg"

	"github.com/ikefrag/ikefrag/cmd/ikefragd/internal/config"
)

// ifaceSet says which links to observe: exact names, shell patterns, and
// the link of the default route, followed as the route changes.
type ifaceSet struct {
	names    []string
	patterns []string
	// followDefault: "default" was listed (or nothing was); defaultLink is
	// the default route's link now (kept while no default route exists).
	followDefault bool
	defaultLink   string
}

// defaultKeyword in interfaces stands for the default route's link.
const defaultKeyword = "default"

// wanted lists the exact names that must be attached: the listed ones and
// the default route's link.
func (s ifaceSet) wanted() []string {
	if s.followDefault && s.defaultLink != "" && !slices.Contains(s.names, s.defaultLink) {
		return append(append([]string{}, s.names...), s.defaultLink)
	}
	return s.names
}

func (s ifaceSet) match(name string) bool {
	if s.followDefault && name == s.defaultLink {
		return true
	}
	for _, n := range s.names {
		if n == name {
			return true
		}
	}
	for _, p := range s.patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

func (s ifaceSet) String() string {
	all := append(append([]string{}, s.names...), s.patterns...)
	if s.followDefault {
		all = append(all, "default ("+s.defaultLink+")")
	}
	return strings.Join(all, ", ")
}

func isPattern(name string) bool { return strings.ContainsAny(name, "*?[") }

// checkSystem checks what a valid configuration names on this host: that
// the listed interfaces exist (or, with none listed, that there is a
// default route to take one from) and that key files are private to this
// user. It returns the interfaces to observe.
func checkSystem(c *config.Config) (ifaceSet, config.Problems) {
	var ps config.Problems
	var set ifaceSet
	if len(c.Interfaces) == 0 || slices.Contains(c.Interfaces, defaultKeyword) {
		set.followDefault = true
		name, err := defaultRouteInterface()
		if err != nil {
			ps = append(ps, config.Problem{Key: "interfaces", Msg: fmt.Sprintf("%s, and the default route gives no interface (%v): list the interfaces to observe", defaultDesc(c.Interfaces), err)})
		} else {
			set.defaultLink = name
		}
	}
	var present []string
	for i, name := range c.Interfaces {
		if name == defaultKeyword {
			continue
		}
		if isPattern(name) {
			set.patterns = append(set.patterns, name)
			continue
		}
		set.names = append(set.names, name)
		if _, err := netlink.LinkByName(name); err != nil {
			if present == nil {
				present = linkNames()
			}
			ps = append(ps, config.Problem{Key: fmt.Sprintf("interfaces[%d]", i),
				Msg: fmt.Sprintf("%q: no such interface in this network namespace (present: %s); a pattern such as %q waits for it instead", name, strings.Join(present, ", "), name+"*")})
		}
	}
	if t := c.Keys.StrongswanTable; t != "" {
		if msg := checkKeyTable(t); msg != "" {
			ps = append(ps, config.Problem{Key: "keys.strongswan_table", Msg: msg})
		}
	}
	if s := c.Keys.Socket; s != "" {
		if msg := checkKeySocket(s); msg != "" {
			ps = append(ps, config.Problem{Key: "keys.socket", Msg: msg})
		}
	}
	return set, ps
}

func defaultDesc(list []string) string {
	if len(list) == 0 {
		return "not set (the default route's interface)"
	}
	return `"default" listed`
}

// defaultRouteInterface names the link of the IPv4 default route, else of
// the IPv6 one.
func defaultRouteInterface() (string, error) {
	l, err := netcfg.DefaultRouteLink(unix.AF_INET)
	if err != nil {
		l6, err6 := netcfg.DefaultRouteLink(unix.AF_INET6)
		if err6 != nil {
			return "", err
		}
		l = l6
	}
	return l.Attrs().Name, nil
}

func linkNames() []string {
	links, err := netlink.LinkList()
	if err != nil {
		return []string{"unknown: " + err.Error()}
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	sort.Strings(names)
	return names
}

// checkKeyTable applies the key package's rules to a save-keys table (or
// its directory): private to this user; a table that does not exist yet
// needs its directory.
func checkKeyTable(p string) string {
	// The format first: owner and mode advice is for key tables only.
	if err := keytable.CheckFormat(p); err != nil {
		return err.Error()
	}
	err := keys.CheckPrivate(p)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, fs.ErrNotExist):
		dir := filepath.Dir(p)
		if _, derr := os.Stat(dir); derr != nil {
			return fmt.Sprintf("%q does not exist, nor does its directory %s", p, dir)
		}
		return ""
	}
	return fmt.Sprintf("%q refused: %v", p, err)
}

// checkKeySocket checks the key socket's directory: it must be private
// (the daemon creates it, mode 0700, when missing).
func checkKeySocket(p string) string {
	dir := filepath.Dir(p)
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Sprintf("%q exists and is not a socket", p)
	}
	err := keys.CheckPrivate(dir)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return ""
	}
	return fmt.Sprintf("%q refused: its directory: %v", p, err)
}
