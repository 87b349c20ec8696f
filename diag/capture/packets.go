package capture

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"iter"
	"os"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// File magic numbers, read little-endian.
const (
	magicPcapMicro   = 0xa1b2c3d4
	magicPcapMicroBE = 0xd4c3b2a1
	magicPcapNano    = 0xa1b23c4d
	magicPcapNanoBE  = 0x4d3cb2a1
	magicPcapng      = 0x0a0d0d0a // Section Header Block type; a palindrome
)

// readBufferSize is the file read buffer: a few large frames at a time.
const readBufferSize = 64 << 10

// FileError is a failure to read a capture file: not a capture, an
// unsupported link type, or a record that cannot be read (truncated file).
// Frame is the 1-based number of the frame being read, 0 for the file
// header.
type FileError struct {
	Path  string
	Frame int
	Err   error
}

func (e *FileError) Error() string {
	if e.Frame > 0 {
		return fmt.Sprintf("capture: %s: frame %d: %v", e.Path, e.Frame, e.Err)
	}
	return fmt.Sprintf("capture: %s: %v", e.Path, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }

// UnsupportedLinkTypeError names a link type DecodeFrame does not handle.
type UnsupportedLinkTypeError struct {
	LinkType  layers.LinkType
	Interface int // pcapng interface ID, -1 for pcap
}

func (e *UnsupportedLinkTypeError) Error() string {
	s := fmt.Sprintf("unsupported link type %d (%s)", uint16(e.LinkType), e.LinkType)
	if e.Interface >= 0 {
		s += fmt.Sprintf(" on pcapng interface %d", e.Interface)
	}
	return s
}

// FrameStats counts frames read and what became of them.
type FrameStats struct {
	Frames  int             // frame records read from the file
	Decoded int             // frames decoded into IP packets
	Skipped [NumReasons]int // frames not decoded, indexed by Reason
}

// SkippedTotal is the sum of Skipped.
func (s *FrameStats) SkippedTotal() int {
	n := 0
	for _, c := range s.Skipped {
		n += c
	}
	return n
}

// Packets reads a pcap or pcapng file and decodes each frame into a Packet.
// Frames that do not decode are counted by reason and skipped.
type Packets struct {
	name   string
	closer io.Closer
	pcap   *pcapgo.Reader
	ng     *pcapgo.NgReader
	link   layers.LinkType
	known  bool // link is set (pcapng learns it from the first frame)
	stats  FrameStats
	err    error
}

// OpenPackets opens a pcap or pcapng file (optionally gzip-compressed).
func OpenPackets(path string) (*Packets, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	pk, err := NewPackets(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	pk.closer = f
	return pk, nil
}

// NewPackets reads a capture from r; name labels errors.
func NewPackets(r io.Reader, name string) (*Packets, error) {
	pk := &Packets{name: name}
	if err := pk.open(r); err != nil {
		return nil, &FileError{Path: name, Err: err}
	}
	return pk, nil
}

func (pk *Packets) open(r io.Reader) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("malformed file header (%v)", v)
		}
	}()
	br := bufio.NewReaderSize(r, readBufferSize)
	magic, err := br.Peek(4)
	if err != nil {
		return fmt.Errorf("too short for a capture file: %w", noEOF(err))
	}
	if magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		br = bufio.NewReaderSize(gz, readBufferSize)
		if magic, err = br.Peek(4); err != nil {
			return fmt.Errorf("too short for a capture file: %w", noEOF(err))
		}
	}
	switch m := binary.LittleEndian.Uint32(magic); m {
	case magicPcapMicro, magicPcapMicroBE, magicPcapNano, magicPcapNanoBE:
		pr, err := pcapgo.NewReader(newRecordGuard(br, false))
		if err != nil {
			return fmt.Errorf("pcap header: %w", noEOF(err))
		}
		pk.pcap = pr
		pk.link, pk.known = pr.LinkType(), true
		if !SupportedLinkType(pk.link) {
			return &UnsupportedLinkTypeError{LinkType: pk.link, Interface: -1}
		}
	case magicPcapng:
		nr, err := pcapgo.NewNgReader(newRecordGuard(br, true), pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return fmt.Errorf("pcapng section header: %w", noEOF(err))
		}
		pk.ng = nr
		if nr.NInterfaces() > 0 {
			if ifc, err := nr.Interface(0); err == nil {
				pk.link, pk.known = ifc.LinkType, true
			}
		}
	default:
		return fmt.Errorf("not a pcap or pcapng file (magic %08x)", m)
	}
	return nil
}

// noEOF turns a bare EOF into ErrUnexpectedEOF: inside a header it is one.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Name is the name errors carry (the path for OpenPackets).
func (pk *Packets) Name() string { return pk.name }

// LinkType is the pcap file's link type, or the link type of the first
// pcapng interface (known once the first frame has been read).
func (pk *Packets) LinkType() layers.LinkType { return pk.link }

// Stats returns the frame counters.
func (pk *Packets) Stats() FrameStats { return pk.stats }

// Close closes the file if OpenPackets opened it.
func (pk *Packets) Close() error {
	if pk.closer == nil {
		return nil
	}
	c := pk.closer
	pk.closer = nil
	return c.Close()
}

// Next returns the next decoded packet. Its Payload is valid until the next
// call. At the end it returns io.EOF; a file that cannot be read further
// returns a *FileError naming the frame, and keeps returning it.
func (pk *Packets) Next() (Packet, error) {
	var p Packet
	for pk.err == nil {
		data, ci, f, err := pk.read()
		if err != nil {
			if err == io.EOF {
				pk.err = io.EOF
			} else {
				pk.err = &FileError{Path: pk.name, Frame: pk.stats.Frames + 1, Err: err}
			}
			break
		}
		pk.stats.Frames++
		if r := decodeFrame(&p, f.link, data, ci); r != reasonNone {
			pk.stats.Skipped[r]++
			p = Packet{}
			continue
		}
		pk.stats.Decoded++
		p.Frame = pk.stats.Frames
		if p.Ifindex == 0 {
			p.Ifindex = f.ifindex
		}
		if p.Dir == obs.DirUnknown {
			p.Dir = f.dir
		}
		return p, nil
	}
	return Packet{}, pk.err
}

// All yields every decoded packet; a read error other than io.EOF is
// yielded last. Each Packet's Payload is valid only until the next one.
func (pk *Packets) All() iter.Seq2[Packet, error] {
	return func(yield func(Packet, error) bool) {
		for {
			p, err := pk.Next()
			if err == io.EOF {
				return
			}
			if !yield(p, err) || err != nil {
				return
			}
		}
	}
}

// frameMeta is what the file format says about a frame besides its bytes.
type frameMeta struct {
	link    layers.LinkType
	ifindex int
	dir     obs.Direction
}

// read returns the next frame record. The pcapgo readers are third-party
// code fed untrusted files; a panic in them becomes an error for this file.
func (pk *Packets) read() (data []byte, ci gopacket.CaptureInfo, f frameMeta, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("malformed record (%v)", v)
		}
	}()
	if pk.pcap != nil {
		data, ci, err = pk.pcap.ZeroCopyReadPacketData()
		if err == io.EOF && ci.CaptureLength > 0 {
			// The record header was read, its data was not there.
			err = io.ErrUnexpectedEOF
		}
		f.link = pk.link
		return data, ci, f, err
	}
	data, ci, opts, err := pk.ng.ZeroCopyReadPacketDataWithOptions()
	if err != nil {
		return nil, ci, f, err
	}
	if len(ci.AncillaryData) > 0 {
		f.link, _ = ci.AncillaryData[0].(layers.LinkType)
	}
	if !pk.known {
		pk.link, pk.known = f.link, true
	}
	if !SupportedLinkType(f.link) {
		return nil, ci, f, &UnsupportedLinkTypeError{LinkType: f.link, Interface: ci.InterfaceIndex}
	}
	// pcapng has no kernel ifindex; interface ID + 1 keeps 0 for "none".
	f.ifindex = ci.InterfaceIndex + 1
	if opts.Flags != nil {
		switch opts.Flags.Direction {
		case pcapgo.NgEpbFlagDirectionInbound:
			f.dir = obs.DirIngress
		case pcapgo.NgEpbFlagDirectionOutbound:
			f.dir = obs.DirEgress
		}
	}
	return data, ci, f, nil
}
