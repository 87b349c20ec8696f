package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// pcapFile is a little-endian pcap (Ethernet) with the given snap length
// and records of the given captured lengths (zero bytes).
func pcapFile(snap uint32, recs ...int) []byte {
	var b bytes.Buffer
	h := make([]byte, 24)
	binary.LittleEndian.PutUint32(h[0:], magicPcapMicro)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], snap)
	binary.LittleEndian.PutUint32(h[20:], 1)
	b.Write(h)
	for _, n := range recs {
		r := make([]byte, 16)
		binary.LittleEndian.PutUint32(r[8:], uint32(n))
		binary.LittleEndian.PutUint32(r[12:], uint32(n))
		b.Write(r)
		b.Write(make([]byte, n))
	}
	return b.Bytes()
}

// pcapngFile is a little-endian pcapng with one Ethernet interface of
// the given snap length and Enhanced Packet Blocks of the given lengths.
func pcapngFile(snap uint32, recs ...int) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	shb := make([]byte, 28)
	le.PutUint32(shb[0:], ngBlockSHB)
	le.PutUint32(shb[4:], 28)
	le.PutUint32(shb[8:], 0x1a2b3c4d)
	le.PutUint16(shb[12:], 1)
	binary.LittleEndian.PutUint64(shb[16:], ^uint64(0))
	le.PutUint32(shb[24:], 28)
	b.Write(shb)
	idb := make([]byte, 20)
	le.PutUint32(idb[0:], ngBlockIDB)
	le.PutUint32(idb[4:], 20)
	le.PutUint16(idb[8:], 1)
	le.PutUint32(idb[12:], snap)
	le.PutUint32(idb[16:], 20)
	b.Write(idb)
	for _, n := range recs {
		pad := (4 - n%4) % 4
		l := 32 + n + pad
		h := make([]byte, 28)
		le.PutUint32(h[0:], ngBlockEPB)
		le.PutUint32(h[4:], uint32(l))
		le.PutUint32(h[20:], uint32(n))
		le.PutUint32(h[24:], uint32(n))
		b.Write(h)
		b.Write(make([]byte, n+pad))
		t := make([]byte, 4)
		le.PutUint32(t, uint32(l))
		b.Write(t)
	}
	return b.Bytes()
}

func gz(t *testing.T, d []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	if _, err := w.Write(d); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readGuarded reads every packet and returns the frames read, the bytes
// allocated meanwhile and the error.
func readGuarded(t *testing.T, file []byte) (int, uint64, error) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pk, err := NewPackets(bytes.NewReader(file), "crafted")
	if err != nil {
		return 0, 0, err
	}
	for {
		if _, err = pk.Next(); err != nil {
			break
		}
	}
	runtime.ReadMemStats(&after)
	if err == io.EOF {
		err = nil
	}
	return pk.Stats().Frames, after.TotalAlloc - before.TotalAlloc, err
}

// A record longer than 262,144 bytes, or than the snap length, is an
// error naming the frame, found before the record is read: a small gzip
// of a huge record allocates nothing like its size.
func TestRecordLengthBound(t *testing.T) {
	const huge = 64 << 20
	for _, c := range []struct {
		name      string
		file      []byte
		wantFrame int // 0: no error
		wantLen   int
	}{
		{"pcap, huge record, huge snaplen, gzip", gz(t, pcapFile(0x7fffffff, 60, huge)), 2, huge},
		{"pcap, over the snaplen", pcapFile(1500, 60, 1501), 2, 1501},
		{"pcap, at the snaplen", pcapFile(1500, 60, 1500), 0, 0},
		{"pcap, at the limit", pcapFile(0x7fffffff, MaxRecordLen), 0, 0},
		{"pcap, over the limit", pcapFile(0x7fffffff, 60, MaxRecordLen+1), 2, MaxRecordLen + 1},
		{"pcapng, huge record, gzip", gz(t, pcapngFile(0, 60, huge)), 2, huge},
		{"pcapng, over the interface's snaplen", pcapngFile(1500, 60, 60, 1504), 3, 1504},
		{"pcapng, at the limit", pcapngFile(0, MaxRecordLen), 0, 0},
		{"pcapng, over the limit", pcapngFile(0, MaxRecordLen+4), 1, MaxRecordLen + 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			frames, alloc, err := readGuarded(t, c.file)
			t.Logf("%d bytes of file: %v; %d frames, %d bytes allocated", len(c.file), err, frames, alloc)
			if alloc > 4<<20 {
				t.Errorf("allocated %d bytes", alloc)
			}
			if c.wantFrame == 0 {
				if err != nil {
					t.Errorf("error %v", err)
				}
				return
			}
			var fe *FileError
			var rl *RecordTooLongError
			if !errors.As(err, &fe) || fe.Frame != c.wantFrame || !errors.As(err, &rl) || rl.Length != c.wantLen {
				t.Errorf("error %v, want a record of %d bytes too long at frame %d", err, c.wantLen, c.wantFrame)
			}
		})
	}
	// an over-long pcapng block that is not a packet
	b := pcapngFile(0)
	blk := make([]byte, 8)
	binary.LittleEndian.PutUint32(blk[0:], 4) // Name Resolution Block
	binary.LittleEndian.PutUint32(blk[4:], MaxRecordLen+maxBlockExtra+4)
	b = append(append(b, blk...), make([]byte, 1<<20)...)
	// (pcapgo reports it in its own words, with the guard's)
	_, _, err := readGuarded(t, b)
	var fe *FileError
	if !errors.As(err, &fe) || fe.Frame != 1 || !strings.Contains(err.Error(), "pcapng block of 327684 bytes exceeds") {
		t.Errorf("long block: %v", err)
	}
}
