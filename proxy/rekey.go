package proxy

import (
	"net/netip"
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// An IKE SA rekey (RFC 7296 §2.18) replaces an IKE SA by a new one with
// new SPIs, in a CREATE_CHILD_SA exchange protected by the old SA's keys;
// the new SA inherits the old one's negotiated extensions, RFC 7383
// fragmentation among them. Long-lived tunnels rekey every few hours, so
// the proxy must recognise the new SPIs as the same client's IKE SA, or
// later large messages lose the repair. It learns them two ways:
//
//   - from the key feed: the strongSwan plugin links the new SA to the old
//     one (old_spi_i/old_spi_r) and says for every SA whether both peers
//     agreed to fragmentation (frag), which also covers SAs whose
//     IKE_SA_INIT the proxy never saw (it restarted);
//   - by opening the CREATE_CHILD_SA exchange with the old SA's keys
//     (rekeyWatch, in rekeywatch.go), which needs no help from the IKE
//     daemon beyond the keys.

// saLinks is what a key source can tell about IKE SAs beyond their keys;
// keys.Store implements it.
type saLinks interface {
	// Rekeyed returns the SPIs of the IKE SA spiI/spiR replaced.
	Rekeyed(spiI, spiR ike.SPI) (oldI, oldR ike.SPI, ok bool)
	// Fragmentation reports whether both peers agreed to RFC 7383
	// fragmentation, when the source said.
	Fragmentation(spiI, spiR ike.SPI) (negotiated, known bool)
}

// saOf returns the proxy's state of the IKE SA a message beyond
// IKE_SA_INIT belongs to. An SA the proxy did not see begin is taken on
// when it can be traced: a rekey of an SA it knows (from the exchange it
// opened, or the key feed's link), or an SA the key feed vouches for.
func (p *Proxy) saOf(f *Flow, spiI, spiR ike.SPI, now time.Time) *ikeSA {
	ca := f.key.client.Addr()
	if sa := p.sas.get(ca, spiI, spiR, now); sa != nil {
		return sa
	}
	if spiR.IsZero() {
		return nil
	}
	return p.followSA(f, ca, spiI, spiR, now)
}

func (p *Proxy) followSA(f *Flow, ca netip.Addr, spiI, spiR ike.SPI, now time.Time) *ikeSA {
	// a rekey seen in a CREATE_CHILD_SA exchange of this client
	if oldI, oldR, ok := p.sas.rekeyOf(spiI, spiR); ok {
		if old := p.sas.get(ca, oldI, oldR, now); old != nil {
			return p.inherit(f, old, spiI, spiR, "exchange", now)
		}
	}
	links, _ := p.keys.(saLinks)
	if links == nil {
		return nil
	}
	if oldI, oldR, ok := links.Rekeyed(spiI, spiR); ok {
		if old := p.sas.get(ca, oldI, oldR, now); old != nil {
			return p.inherit(f, old, spiI, spiR, "key feed", now)
		}
	}
	if neg, known := links.Fragmentation(spiI, spiR); known {
		sa := p.sas.adopt(saKey{ca, spiI}, spiR, f.be, neg, now)
		p.log.Info("proxy: IKE SA taken on from the key feed", "client", ca, "spi_i", spiI, "spi_r", spiR,
			"fragmentation", neg)
		return sa
	}
	return nil
}

// inherit makes the new SA of a rekey: same backend, same negotiation.
func (p *Proxy) inherit(f *Flow, old *ikeSA, spiI, spiR ike.SPI, how string, now time.Time) *ikeSA {
	old.mu.Lock()
	neg, be := old.negotiated(), old.be
	old.mu.Unlock()
	if be == nil {
		be = f.be
	}
	sa := p.sas.adopt(saKey{f.key.client.Addr(), spiI}, spiR, be, neg, now)
	p.log.Info("proxy: following IKE SA rekey", "client", f.key.client.Addr(), "old_spi_i", old.key.spiI,
		"old_spi_r", old.spiR, "spi_i", spiI, "spi_r", spiR, "learnt_from", how)
	return sa
}
