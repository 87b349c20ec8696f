package diag

import (
	"errors"
	"time"

	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/ike/sk"
	"github.com/ikefrag/ikefrag/keys"
)

// DecryptStatus says what became of an encrypted message given to a
// Decryptor.
type DecryptStatus string

const (
	NoKeys      DecryptStatus = "no keys for this SA"
	Unsupported DecryptStatus = "unsupported suite"
	Failed      DecryptStatus = "integrity check failed"
	Stored      DecryptStatus = "fragment stored"
	Decrypted   DecryptStatus = "decrypted"
	Reassembled DecryptStatus = "reassembled"
	Repeated    DecryptStatus = "retransmission of a decrypted message"
	Duplicate   DecryptStatus = "copy of a fragment already held"
	Dropped     DecryptStatus = "dropped"
)

// Decryption is the outcome of opening one SK message or SKF fragment.
type Decryption struct {
	Status DecryptStatus
	// Inner is the decoded inner payload chain, for Decrypted and
	// Reassembled.
	Inner []ike.Payload
	// Fragments is the Total Fragments a reassembled message arrived in.
	Fragments uint16
	// Detail explains Failed and Dropped (never key material).
	Detail string
}

// Decryptor opens the SK and SKF messages of IKE SAs whose keys a key
// source holds, reassembling RFC 7383 fragments. It serves both the
// engine and `ikefragctl decode --keys`.
type Decryptor struct {
	src keys.Source
	r   *sk.Reassembler
}

// NewDecryptor returns a Decryptor over src. now is the clock used for
// reassembly ages: capture time for files, wall time for live traffic.
func NewDecryptor(src keys.Source, now func() time.Time) *Decryptor {
	return &Decryptor{src: src, r: sk.NewReassembler(sk.ReassemblerConfig{Now: now})}
}

// Open takes one whole IKEv2 message (without the non-ESP marker).
func (d *Decryptor) Open(h ike.Header, msg []byte) Decryption {
	sa, err := d.src.Lookup(h.SPIi, h.SPIr)
	switch {
	case errors.Is(err, sk.ErrUnsupportedSuite):
		return Decryption{Status: Unsupported, Detail: err.Error()}
	case err != nil:
		return Decryption{Status: NoKeys}
	}
	res := d.r.Add(sa, msg)
	switch res.Status {
	case sk.StatusStored:
		return Decryption{Status: Stored}
	case sk.StatusRetransmit:
		return Decryption{Status: Repeated}
	case sk.StatusComplete:
		out := Decryption{Status: Decrypted, Fragments: res.Message.Fragments}
		if res.Message.Fragments > 0 {
			out.Status = Reassembled
		}
		inner, err := res.Message.Decode()
		if err != nil {
			out.Detail = "inner payloads: " + err.Error()
		}
		out.Inner = inner
		return out
	}
	if res.Drop == sk.DropDuplicate {
		return Decryption{Status: Duplicate}
	}
	if res.Drop == sk.DropIntegrity {
		return Decryption{Status: Failed, Detail: "wrong keys or a corrupted message"}
	}
	detail := res.Drop.String()
	if res.Err != nil {
		detail += ": " + res.Err.Error()
	}
	return Decryption{Status: Dropped, Detail: detail}
}

// innerNotify returns the first inner notify of type t, or nil.
func innerNotify(inner []ike.Payload, t ike.NotifyType) *ike.Notify {
	for i := range inner {
		if n, ok := inner[i].Body.(*ike.Notify); ok && n.Type == t {
			return n
		}
	}
	return nil
}
