// Package keytable checks that a file named as a strongSwan save-keys
// table is one before anything is said about its owner or mode: advice
// such as `chmod 600 /etc/passwd` for a file that holds no keys is wrong,
// and changing that mode would break the system.
package keytable

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ikefrag/ikefrag/keys"
)

// maxProbeLines bounds how many lines are checked: a real table's lines
// all parse, and a few are enough to tell another file from it.
const maxProbeLines = 8

// maxLine bounds one line read while probing (a table line is well under
// 1 KiB; a longer "line" is not one).
const maxLine = 4096

// ErrNotTable marks a file that is not a save-keys table.
var ErrNotTable = errors.New("not a strongSwan save-keys table")

// CheckFormat reads the first lines of the table at path (or of
// ikev2_decryption_table in the directory path) and returns an error
// wrapping ErrNotTable when they are not save-keys lines. A table that
// does not exist yet, or is empty, is not an error here; an unreadable
// one is left to the caller's own checks. Key bytes never appear in the
// error.
func CheckFormat(path string) error {
	p := path
	fi, err := os.Stat(p)
	if err == nil && fi.IsDir() {
		p = filepath.Join(p, keys.SaveKeysTable)
		fi, err = os.Stat(p)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return nil
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file (want the ikev2_decryption_table strongSwan's save-keys plugin writes, or its directory)", ErrNotTable, p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil // unreadable: the owner and mode checks say why
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.LimitReader(f, maxProbeLines*maxLine), maxLine)
	parsed := false
	for n := 1; n <= maxProbeLines; n++ {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("%w: %s: line %d is longer than %d bytes (want lines of SPIi,SPIr,SK_ei,SK_er,\"encryption\",SK_ai,SK_ar,\"integrity\")", ErrNotTable, p, n, maxLine)
		}
		// A last line without its newline after good ones may be one
		// being written: not judged.
		partial := err != nil && parsed
		if len(bytes.TrimSpace(line)) > 0 && !partial {
			parsed = true
			l, perr := keys.ParseSaveKeysLine(line)
			if perr != nil {
				return fmt.Errorf("%w: %s: line %d: %v (want lines of SPIi,SPIr,SK_ei,SK_er,\"encryption\",SK_ai,SK_ar,\"integrity\")", ErrNotTable, p, n, perr)
			}
			l.Keys.Zero()
		}
		clear(line)
		if err != nil {
			return nil // the end of the file
		}
	}
	return nil
}
