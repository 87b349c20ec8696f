package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/ikefrag/ikefrag/cmd/internal/keytable"
	"github.com/ikefrag/ikefrag/diag"
	"github.com/ikefrag/ikefrag/ike"
	"github.com/ikefrag/ikefrag/keys"
)

// loadKeys reads a strongSwan save-keys table (or the directory holding
// ikev2_decryption_table). It must be a save-keys table, and private to
// its owner, as the daemon requires.
func loadKeys(path string) (keys.Source, error) {
	// The format first: the mode advice below is for key tables only.
	if err := keytable.CheckFormat(path); err != nil {
		return nil, fmt.Errorf("--keys: %w", err)
	}
	store := keys.NewStore(keys.StoreConfig{IdleTimeout: 24 * time.Hour})
	if _, err := keys.NewSaveKeys(store, keys.SaveKeysConfig{Path: path}); err != nil {
		return nil, fmt.Errorf("--keys: %w", err)
	}
	return store, nil
}

// innerInfo is what decode --keys shows of a decrypted message.
type innerInfo struct {
	Status     string   `json:"status"`
	Fragments  uint16   `json:"reassembled_from,omitempty"`
	Payloads   []string `json:"payloads,omitempty"`
	IDs        []string `json:"ids,omitempty"`
	Certs      []string `json:"certs,omitempty"`
	AuthMethod string   `json:"auth_method,omitempty"`
	Notifies   []string `json:"notifies,omitempty"`
	Proposal   string   `json:"proposal,omitempty"`
	TSi        []string `json:"tsi,omitempty"`
	TSr        []string `json:"tsr,omitempty"`
	CP         []string `json:"cp,omitempty"`
	Detail     string   `json:"detail,omitempty"`
}

func describeInner(d diag.Decryption) *innerInfo {
	in := &innerInfo{Status: string(d.Status), Fragments: d.Fragments, Detail: d.Detail}
	for i := range d.Inner {
		p := &d.Inner[i]
		in.Payloads = append(in.Payloads, p.Type.String())
		switch b := p.Body.(type) {
		case *ike.ID:
			in.IDs = append(in.IDs, p.Type.String()+"="+b.String())
		case *ike.Cert:
			if s, err := b.Subject(); err == nil {
				in.Certs = append(in.Certs, s)
			} else {
				in.Certs = append(in.Certs, b.Encoding.String())
			}
		case *ike.Auth:
			in.AuthMethod = b.Method.String()
		case *ike.Notify:
			in.Notifies = append(in.Notifies, b.Type.String())
		case *ike.SA:
			if len(b.Proposals) > 0 {
				var ps []string
				for j := range b.Proposals {
					ps = append(ps, proposalString(&b.Proposals[j]))
				}
				in.Proposal = strings.Join(ps, " | ")
			}
		case *ike.TS:
			for j := range b.Selectors {
				s := b.Selectors[j].String()
				if p.Type == ike.PayloadTSi {
					in.TSi = append(in.TSi, s)
				} else {
					in.TSr = append(in.TSr, s)
				}
			}
		case *ike.CP:
			for j := range b.Attributes {
				in.CP = append(in.CP, b.Attributes[j].String())
			}
		}
	}
	return in
}

func proposalString(p *ike.Proposal) string {
	parts := make([]string, 0, len(p.Transforms))
	for i := range p.Transforms {
		parts = append(parts, p.Transforms[i].String())
	}
	return p.Protocol.String() + ":" + strings.Join(parts, "/")
}

func (in *innerInfo) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "    [%s", in.Status)
	if in.Fragments > 0 {
		fmt.Fprintf(&b, " from %d fragments", in.Fragments)
	}
	b.WriteString("]")
	if len(in.Payloads) > 0 {
		fmt.Fprintf(&b, " inner: %s", strings.Join(in.Payloads, " "))
	}
	for _, id := range in.IDs {
		fmt.Fprintf(&b, "\n      %s", id)
	}
	for _, c := range in.Certs {
		fmt.Fprintf(&b, "\n      CERT %s", c)
	}
	if in.AuthMethod != "" {
		fmt.Fprintf(&b, "\n      AUTH %s", in.AuthMethod)
	}
	if in.Proposal != "" {
		fmt.Fprintf(&b, "\n      SA %s", in.Proposal)
	}
	if len(in.TSi) > 0 || len(in.TSr) > 0 {
		fmt.Fprintf(&b, "\n      TSi %s  TSr %s", strings.Join(in.TSi, ","), strings.Join(in.TSr, ","))
	}
	if len(in.CP) > 0 {
		fmt.Fprintf(&b, "\n      CP %s", strings.Join(in.CP, ", "))
	}
	if len(in.Notifies) > 0 {
		fmt.Fprintf(&b, "\n      notify %s", strings.Join(in.Notifies, ","))
	}
	if in.Detail != "" {
		fmt.Fprintf(&b, "\n      (%s)", in.Detail)
	}
	return b.String()
}
