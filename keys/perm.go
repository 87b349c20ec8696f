package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ErrInsecure is matched (errors.Is) by every refusal of a key path whose
// owner or mode would let someone else read the keys.
var ErrInsecure = errors.New("insecure key path")

// CheckPrivate refuses a key file, key directory or key socket that is not
// owned by the running user or that group or others can read (or, for a
// directory, write). The error names the path and the command that fixes it.
func CheckPrivate(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	return checkInfo(path, fi)
}

func checkInfo(path string, fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%w: %s is a symbolic link; point the configuration at the real path", ErrInsecure, path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: %s: cannot read its owner", ErrInsecure, path)
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("%w: %s is owned by uid %d, not by this daemon's uid %d: run \"chown %d %s\" or run the daemon as its owner",
			ErrInsecure, path, st.Uid, uid, uid, path)
	}
	perm := fi.Mode().Perm()
	kind, bad, fix := "key file", fs.FileMode(0o077), "600"
	switch {
	case fi.IsDir():
		kind, bad, fix = "key directory", 0o066, "700"
	case fi.Mode()&fs.ModeSocket != 0:
		kind = "key socket"
	}
	if perm&bad != 0 {
		return fmt.Errorf("%w: %s %s has mode %04o, which lets group or others at the keys: run \"chmod %s %s\"",
			ErrInsecure, kind, path, perm, fix, path)
	}
	return nil
}
