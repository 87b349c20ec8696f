package proxy

import (
	"time"

	"github.com/ikefrag/ikefrag/ike"
)

// watchRekey opens a CREATE_CHILD_SA message of an IKE SA the proxy has
// keys for and learns an IKE SA rekey from it (RFC 7296 §1.3.2, §2.18):
// the request's SA payload carries a proposal of protocol IKE whose SPI is
// the new SA's initiator SPI (the requester's), the response's the new
// responder SPI. When both are seen the new pair is noted as replacing the
// old one, so that saOf takes the new SA on with the old one's
// negotiation. fromClient says the message came from the client. A
// message that cannot be opened (fragmented, keys missing, corrupt) teaches
// nothing; the key feed's link still covers it.
func (p *Proxy) watchRekey(f *Flow, h ike.Header, msg []byte, fromClient bool, now time.Time) {
	if h.Exchange != ike.ExchangeCreateChildSA || p.keys == nil || h.SPIr.IsZero() {
		return
	}
	typ, _, ok := encryptedPayload(msg, h.NextPayload)
	if !ok || typ != ike.PayloadEncrypted {
		// an IKE SA rekey carries one KE and nonce and fits a datagram;
		// fragment sets are left to the key feed
		return
	}
	sa := p.sas.get(f.key.client.Addr(), h.SPIi, h.SPIr, now)
	if sa == nil {
		return
	}
	ksa, err := p.keys.Lookup(h.SPIi, h.SPIr)
	if err != nil {
		return
	}
	op, err := ksa.Open(msg)
	if err != nil {
		return
	}
	defer clear(op.Content)
	spi, found := ikeProposalSPI(op.NextPayload, op.Content)
	if !found {
		return // a CHILD_SA exchange, not an IKE SA rekey
	}
	sa.mu.Lock()
	if !h.Flags.Response() {
		sa.rekeyMID, sa.rekeyByClient, sa.rekeySPI, sa.rekeyPending = h.MessageID, fromClient, spi, true
		sa.mu.Unlock()
		return
	}
	if !sa.rekeyPending || sa.rekeyMID != h.MessageID || sa.rekeyByClient == fromClient {
		sa.mu.Unlock()
		return
	}
	newI, newR := sa.rekeySPI, spi
	oldI, oldR := sa.key.spiI, sa.spiR
	sa.rekeyPending = false
	sa.mu.Unlock()
	p.sas.noteRekey(oldI, oldR, newI, newR)
	p.log.Debug("proxy: IKE SA rekey seen in CREATE_CHILD_SA", "client", f.key.client.Addr(),
		"old_spi_i", oldI, "old_spi_r", oldR, "spi_i", newI, "spi_r", newR)
}

// ikeProposalSPI returns the SPI of the first IKE proposal in the SA
// payload of an inner payload chain.
func ikeProposalSPI(first ike.PayloadType, content []byte) (ike.SPI, bool) {
	ps, err := ike.DecodePayloads(first, content)
	if err != nil {
		return ike.SPI{}, false
	}
	for i := range ps {
		sa, ok := ps[i].Body.(*ike.SA)
		if !ok {
			continue
		}
		for _, pr := range sa.Proposals {
			if pr.Protocol == ike.ProtocolIKE && len(pr.SPI) == len(ike.SPI{}) {
				var spi ike.SPI
				copy(spi[:], pr.SPI)
				return spi, !spi.IsZero()
			}
		}
	}
	return ike.SPI{}, false
}
