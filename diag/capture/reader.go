package capture

import (
	"io"
	"iter"

	"github.com/gopacket/gopacket/layers"

	"github.com/ikefrag/ikefrag/diag/obs"
)

// Options configures a Reader.
type Options struct {
	Defrag DefragOptions
}

// Stats counts what a Reader did.
type Stats struct {
	FrameStats
	Defrag    DefragStats
	Datagrams int // Datagram records returned
	TooBig    int // ICMPTooBig records returned
}

// Reader turns a capture file into observation records in capture order: a
// datagram when the frame that completes it is read, an incomplete one when
// its train times out or at the end of input, an ICMPTooBig for each ICMPv4
// "fragmentation needed" or ICMPv6 "packet too big" message (in place of its
// datagram).
type Reader struct {
	pk    *Packets
	df    *Defragmenter
	q     []*obs.Datagram
	qi    int
	err   error // returned once q drains: io.EOF or the read error
	stats Stats
}

// Open opens a pcap or pcapng file.
func Open(path string, opts Options) (*Reader, error) {
	pk, err := OpenPackets(path)
	if err != nil {
		return nil, err
	}
	return newReader(pk, opts), nil
}

// NewReader reads a capture from r; name labels errors.
func NewReader(r io.Reader, name string, opts Options) (*Reader, error) {
	pk, err := NewPackets(r, name)
	if err != nil {
		return nil, err
	}
	return newReader(pk, opts), nil
}

func newReader(pk *Packets, opts Options) *Reader {
	return &Reader{pk: pk, df: NewDefragmenter(opts.Defrag)}
}

// Next returns the next record. At the end of input, after the incomplete
// trains, it returns io.EOF; if the file broke off, it returns the
// *FileError instead, after everything read before it.
func (r *Reader) Next() (obs.Record, error) {
	for {
		if r.qi < len(r.q) {
			d := r.q[r.qi]
			r.q[r.qi] = nil
			r.qi++
			if t, ok := TooBig(d); ok {
				r.stats.TooBig++
				tb := new(obs.ICMPTooBig) // allocated only here, not per call
				*tb = t
				return obs.Record{TooBig: tb}, nil
			}
			r.stats.Datagrams++
			return obs.Record{Datagram: d}, nil
		}
		r.q, r.qi = r.q[:0], 0
		if r.err != nil {
			return obs.Record{}, r.err
		}
		p, err := r.pk.Next()
		if err != nil {
			r.err = err
			r.q = r.df.Flush(r.q)
			continue
		}
		r.q = r.df.Add(&p, r.q)
	}
}

// All yields every record; a read error other than io.EOF is yielded last.
func (r *Reader) All() iter.Seq2[obs.Record, error] {
	return func(yield func(obs.Record, error) bool) {
		for {
			rec, err := r.Next()
			if err == io.EOF {
				return
			}
			if !yield(rec, err) || err != nil {
				return
			}
		}
	}
}

// Stats returns the counters so far.
func (r *Reader) Stats() Stats {
	s := r.stats
	s.FrameStats = r.pk.Stats()
	s.Defrag = r.df.Stats()
	return s
}

// LinkType is the file's link type (pcapng: the first interface's, known
// once the first record has been read).
func (r *Reader) LinkType() layers.LinkType { return r.pk.LinkType() }

// Close closes the file if Open opened it.
func (r *Reader) Close() error { return r.pk.Close() }

// ReadFile reads a whole capture file into records.
func ReadFile(path string, opts Options) ([]obs.Record, Stats, error) {
	r, err := Open(path, opts)
	if err != nil {
		return nil, Stats{}, err
	}
	defer r.Close()
	var recs []obs.Record
	for rec, err := range r.All() {
		if err != nil {
			return recs, r.Stats(), err
		}
		recs = append(recs, rec)
	}
	return recs, r.Stats(), nil
}
