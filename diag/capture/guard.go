package capture

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxRecordLen is the longest frame record a capture may hold: 262,144
// bytes, the largest snap length of tcpdump and Wireshark
// (MAXIMUM_SNAPLEN). A record longer than this, or than the snap length
// its file (pcap) or interface (pcapng) declares, is an error naming the
// frame, found before any of it is read.
const MaxRecordLen = 262144

// maxBlockExtra is what a pcapng block may hold beyond its record: the
// Enhanced Packet Block's 32 bytes of header and trailer, and options
// (comments, hashes). Blocks of other types get the same bound.
const maxBlockExtra = 64 << 10

// maxInterfaces bounds the pcapng interfaces of one section (each costs
// the readers a description in memory).
const maxInterfaces = 1 << 16

// RecordTooLongError is a frame record longer than the reader takes.
type RecordTooLongError struct {
	Length int // the record's captured length (pcapng: the block's length when Block)
	Limit  int
	// Snaplen is the file's or interface's snap length, 0 when none.
	Snaplen int
	// Block is set when a pcapng block, not a record, is too long.
	Block bool
}

func (e *RecordTooLongError) Error() string {
	if e.Block {
		return fmt.Sprintf("pcapng block of %d bytes exceeds the largest taken, %d", e.Length, e.Limit)
	}
	if e.Snaplen > 0 && e.Snaplen < MaxRecordLen {
		return fmt.Sprintf("record of %d bytes exceeds the snap length %d", e.Length, e.Limit)
	}
	return fmt.Sprintf("record of %d bytes exceeds the largest taken, %d bytes", e.Length, e.Limit)
}

// pcapng block types the guard reads into (the pcapng draft, section 4).
const (
	ngBlockIDB = 1
	ngBlockOPB = 2 // obsolete Packet Block
	ngBlockEPB = 6
	ngBlockSHB = 0x0a0d0d0a
)

// recordGuard sits between the file and the pcapgo readers and follows
// the file's structure as it streams past: at each record (pcap) or
// block (pcapng) header it checks the length, and stops the stream with
// a RecordTooLongError right after the header of one that is too long.
// The readers then fail on that frame without having allocated for it,
// whatever the file claims and however well a gzip of it compresses.
type recordGuard struct {
	r  io.Reader
	ng bool

	order binary.ByteOrder
	limit int // pcap: min(MaxRecordLen, snaplen)
	snap  int // pcap: the file's snap length

	hdr  [32]byte // the header being collected
	have int      // bytes of hdr collected
	need int      // bytes of hdr wanted before the next decision
	skip int64    // bytes of the current record or block still to pass

	started bool  // past the pcap file header
	ifSnap  []int // pcapng: snap length per interface of the section
	err     error // returned once the bytes before it are passed
}

func newRecordGuard(r io.Reader, ng bool) *recordGuard {
	g := &recordGuard{r: r, ng: ng, order: binary.LittleEndian}
	if ng {
		g.need = 8
	} else {
		g.need = 24
	}
	return g
}

func (g *recordGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	for i := 0; i < n; {
		if g.skip > 0 {
			k := min(int64(n-i), g.skip)
			i += int(k)
			g.skip -= k
			continue
		}
		c := min(g.need-g.have, n-i)
		copy(g.hdr[g.have:], p[i:i+c])
		g.have += c
		i += c
		if g.have < g.need {
			continue
		}
		if e := g.decide(); e != nil {
			// pass the header, fail the record
			g.err = e
			return i, nil
		}
	}
	return n, err
}

// decide acts on a complete header (hdr[:need]): it wants more bytes,
// accepts the record (skip set, collecting the next header), or refuses.
func (g *recordGuard) decide() error {
	if !g.ng {
		return g.decidePcap()
	}
	return g.decideNg()
}

func (g *recordGuard) decidePcap() error {
	if !g.started {
		g.started = true
		switch binary.LittleEndian.Uint32(g.hdr[:4]) {
		case magicPcapMicroBE, magicPcapNanoBE:
			g.order = binary.BigEndian
		}
		g.snap = int(g.order.Uint32(g.hdr[16:20]))
		g.limit = MaxRecordLen
		if g.snap > 0 && g.snap < g.limit {
			g.limit = g.snap
		}
		g.have, g.need = 0, 16
		return nil
	}
	incl := int64(g.order.Uint32(g.hdr[8:12]))
	if incl > int64(g.limit) {
		return &RecordTooLongError{Length: int(incl), Limit: g.limit, Snaplen: g.snap}
	}
	g.skip, g.have, g.need = incl, 0, 16
	return nil
}

func (g *recordGuard) decideNg() error {
	typ := g.order.Uint32(g.hdr[0:4])
	if binary.LittleEndian.Uint32(g.hdr[0:4]) == ngBlockSHB {
		typ = ngBlockSHB
		if g.need < 12 {
			g.need = 12 // the byte-order magic
			return nil
		}
		if binary.LittleEndian.Uint32(g.hdr[8:12]) == 0x1a2b3c4d {
			g.order = binary.LittleEndian
		} else {
			g.order = binary.BigEndian
		}
		g.ifSnap = g.ifSnap[:0]
	}
	// the type-specific fields the guard reads
	want := 8
	switch typ {
	case ngBlockIDB:
		want = 16
	case ngBlockEPB, ngBlockOPB:
		want = 28
	case ngBlockSHB:
		want = 12
	}
	length := int64(g.order.Uint32(g.hdr[4:8]))
	blockTooLong := length > MaxRecordLen+maxBlockExtra
	if blockTooLong && typ != ngBlockEPB && typ != ngBlockOPB {
		// (a packet block's record length is read first: the error
		// names what is too long)
		return &RecordTooLongError{Length: int(length), Limit: MaxRecordLen + maxBlockExtra, Block: true}
	}
	if length < int64(want) {
		// malformed: the reader says so; pass the rest of what it
		// declares, or nothing
		g.skip, g.have, g.need = max(0, length-int64(g.have)), 0, 8
		return nil
	}
	if g.need < want {
		g.need = want
		return nil
	}
	switch typ {
	case ngBlockIDB:
		if len(g.ifSnap) >= maxInterfaces {
			return fmt.Errorf("more than %d pcapng interfaces in a section", maxInterfaces)
		}
		g.ifSnap = append(g.ifSnap, int(g.order.Uint32(g.hdr[12:16])))
	case ngBlockEPB, ngBlockOPB:
		var ifc int
		if typ == ngBlockEPB {
			ifc = int(g.order.Uint32(g.hdr[8:12]))
		} else {
			ifc = int(g.order.Uint16(g.hdr[8:10]))
		}
		snap, limit := 0, MaxRecordLen
		if ifc < len(g.ifSnap) {
			snap = g.ifSnap[ifc]
		}
		if snap > 0 && snap < limit {
			limit = snap
		}
		if incl := int64(g.order.Uint32(g.hdr[20:24])); incl > int64(limit) {
			return &RecordTooLongError{Length: int(incl), Limit: limit, Snaplen: snap}
		}
		if blockTooLong {
			return &RecordTooLongError{Length: int(length), Limit: MaxRecordLen + maxBlockExtra, Block: true}
		}
	}
	g.skip, g.have, g.need = length-int64(g.have), 0, 8
	return nil
}
