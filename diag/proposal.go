package diag

import (
	"strings"

	"github.com/ikefrag/ikefrag/ike"
)

// offerChoice is one suite a responder could pick from an IKE SA offer: one
// transform of each type from one proposal (RFC 7296 §3.3.6).
type offerChoice struct {
	proposal int // the proposal's number
	encr     *ike.Transform
	prf      *ike.Transform
	integ    *ike.Transform // nil with an AEAD cipher
	dh       *ike.Transform
	strength ike.Verdict
}

// asProposal renders the choice as a one-transform-per-type proposal, for
// rating and display.
func (c *offerChoice) asProposal() *ike.Proposal {
	p := &ike.Proposal{Number: uint8(c.proposal), Protocol: ike.ProtocolIKE}
	for _, t := range []*ike.Transform{c.encr, c.prf, c.integ, c.dh} {
		if t != nil {
			p.Transforms = append(p.Transforms, *t)
		}
	}
	return p
}

// maxChoices bounds the combinations rated per offer: a hostile offer of
// 255 transforms of each type must not cost 255^4 ratings.
const maxChoices = 4096

// strongestChoice returns the strongest suite the offer allows: rated as a
// suite (weakest transform wins), ties broken by the initiator's own order.
// ok is false when no proposal holds an ENCR, PRF and KE transform.
func strongestChoice(sa *ike.SA) (best offerChoice, ok bool) {
	n := 0
	for i := range sa.Proposals {
		p := &sa.Proposals[i]
		if p.Protocol != ike.ProtocolIKE {
			continue
		}
		var encr, prf, integ, dh []*ike.Transform
		for j := range p.Transforms {
			t := &p.Transforms[j]
			switch t.Type {
			case ike.TransformENCR:
				encr = append(encr, t)
			case ike.TransformPRF:
				prf = append(prf, t)
			case ike.TransformINTEG:
				integ = append(integ, t)
			case ike.TransformDH:
				dh = append(dh, t)
			}
		}
		for _, e := range encr {
			ints := integ
			if ike.EncrID(e.ID).IsAEAD() || len(ints) == 0 {
				ints = []*ike.Transform{nil}
			}
			for _, f := range prf {
				for _, it := range ints {
					for _, d := range dh {
						if n++; n > maxChoices {
							return best, ok
						}
						c := offerChoice{proposal: int(p.Number), encr: e, prf: f, integ: it, dh: d}
						c.strength = c.asProposal().Strength()
						if !ok || strengthRank(c.strength.Strength) > strengthRank(best.strength.Strength) {
							best, ok = c, true
						}
					}
				}
			}
		}
	}
	return best, ok
}

func strengthRank(s ike.Strength) int {
	switch s {
	case ike.Strong:
		return 3
	case ike.Acceptable:
		return 2
	case ike.Unknown:
		return 1
	}
	return 0
}

// strongSwan proposal keywords (strongSwan's IKEv2 cipher suite list).
var (
	swanEncr = map[ike.EncrID]string{
		ike.Encr3DES: "3des", ike.EncrDES: "des", ike.EncrBlowfish: "blowfish", ike.EncrCAST: "cast128",
		ike.EncrChaCha20Poly1305: "chacha20poly1305", ike.EncrNULL: "null",
	}
	swanAESMode = map[ike.EncrID]string{
		ike.EncrAESCBC: "", ike.EncrAESCTR: "ctr", ike.EncrAESGCM8: "gcm8", ike.EncrAESGCM12: "gcm12", ike.EncrAESGCM16: "gcm16",
		ike.EncrAESCCM8: "ccm8", ike.EncrAESCCM12: "ccm12", ike.EncrAESCCM16: "ccm16",
		ike.EncrCamelliaCBC: "", ike.EncrCamelliaCTR: "ctr",
	}
	swanPRF = map[ike.PRFID]string{
		ike.PRFHMACMD5: "prfmd5", ike.PRFHMACSHA1: "prfsha1", ike.PRFAES128XCBC: "prfaesxcbc", ike.PRFAES128CMAC: "prfaescmac",
		ike.PRFHMACSHA2_256: "prfsha256", ike.PRFHMACSHA2_384: "prfsha384", ike.PRFHMACSHA2_512: "prfsha512",
	}
	swanInteg = map[ike.IntegID]string{
		ike.IntegHMACMD5_96: "md5", ike.IntegHMACSHA1_96: "sha1", ike.IntegAESXCBC96: "aesxcbc", ike.IntegAESCMAC96: "aescmac",
		ike.IntegHMACMD5_128: "md5_128", ike.IntegHMACSHA1_160: "sha1_160",
		ike.IntegHMACSHA2_256128: "sha256", ike.IntegHMACSHA2_384192: "sha384", ike.IntegHMACSHA2_512256: "sha512",
	}
	swanDH = map[ike.DHGroup]string{
		1: "modp768", 2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072", 16: "modp4096", 17: "modp6144", 18: "modp8192",
		19: "ecp256", 20: "ecp384", 21: "ecp521", 22: "modp1024s160", 23: "modp2048s224", 24: "modp2048s256",
		25: "ecp192", 26: "ecp224", 27: "ecp224bp", 28: "ecp256bp", 29: "ecp384bp", 30: "ecp512bp", 31: "curve25519", 32: "curve448",
		35: "mlkem512", 36: "mlkem768", 37: "mlkem1024",
	}
	// Windows (RRAS Set-VpnServerConfiguration -CustomPolicy and the
	// client's Set-VpnConnectionIPsecConfiguration) accept only these.
	winEncr = map[ike.EncrID]map[int]string{
		ike.EncrDES: {0: "DES"}, ike.Encr3DES: {0: "DES3"},
		ike.EncrAESCBC:   {128: "AES128", 192: "AES192", 256: "AES256"},
		ike.EncrAESGCM16: {128: "GCMAES128", 192: "GCMAES192", 256: "GCMAES256"},
	}
	winInteg = map[ike.IntegID]string{ike.IntegHMACMD5_96: "MD5", ike.IntegHMACSHA1_96: "SHA1", ike.IntegHMACSHA2_256128: "SHA256", ike.IntegHMACSHA2_384192: "SHA384"}
	winPRF   = map[ike.PRFID]string{ike.PRFHMACMD5: "MD5", ike.PRFHMACSHA1: "SHA1", ike.PRFHMACSHA2_256: "SHA256", ike.PRFHMACSHA2_384: "SHA384"}
	winDH    = map[ike.DHGroup]string{1: "Group1", 2: "Group2", 14: "Group14", 19: "ECP256", 20: "ECP384", 24: "Group24"}
)

// strongSwanProposal spells the choice as a strongSwan "proposals" value,
// or returns the transform it cannot spell.
func (c *offerChoice) strongSwanProposal() (string, string) {
	var parts []string
	id := ike.EncrID(c.encr.ID)
	kl, _ := c.encr.KeyLength()
	if mode, ok := swanAESMode[id]; ok && kl > 0 {
		base := "aes"
		if id == ike.EncrCamelliaCBC || id == ike.EncrCamelliaCTR {
			base = "camellia"
		}
		parts = append(parts, base+itoa(kl)+mode)
	} else if k, ok := swanEncr[id]; ok {
		parts = append(parts, k)
	} else {
		return "", c.encr.String()
	}
	if c.integ != nil {
		k, ok := swanInteg[ike.IntegID(c.integ.ID)]
		if !ok {
			return "", c.integ.String()
		}
		parts = append(parts, k)
	}
	k, ok := swanPRF[ike.PRFID(c.prf.ID)]
	if !ok {
		return "", c.prf.String()
	}
	parts = append(parts, k)
	k, ok = swanDH[ike.DHGroup(c.dh.ID)]
	if !ok {
		return "", c.dh.String()
	}
	parts = append(parts, k)
	return strings.Join(parts, "-"), ""
}

// rrasPolicy spells the choice as RRAS -CustomPolicy arguments, or returns
// the transform RRAS cannot use.
func (c *offerChoice) rrasPolicy() (string, string) {
	kl, _ := c.encr.KeyLength()
	enc, ok := winEncr[ike.EncrID(c.encr.ID)][kl]
	if !ok {
		return "", c.encr.String()
	}
	var integ string
	if c.integ != nil {
		if integ, ok = winInteg[ike.IntegID(c.integ.ID)]; !ok {
			return "", c.integ.String()
		}
	} else if integ, ok = winPRF[ike.PRFID(c.prf.ID)]; !ok {
		// With GCM, Windows takes the integrity method as the PRF.
		return "", c.prf.String()
	}
	if p, ok := winPRF[ike.PRFID(c.prf.ID)]; !ok || p != integ {
		// Windows derives the PRF from the integrity method.
		return "", c.prf.String() + " (Windows pairs the PRF with the integrity method " + integ + ")"
	}
	dh, ok := winDH[ike.DHGroup(c.dh.ID)]
	if !ok {
		return "", c.dh.String()
	}
	return sprintf("-EncryptionMethod %s -IntegrityCheckMethod %s -DHGroup %s", enc, integ, dh), ""
}

func itoa(n int) string { return sprintf("%d", n) }

// noProposalRemedy derives the NO_PROPOSAL_CHOSEN fix from what the
// initiator offered: what a responder could enable to accept the strongest
// suite in the offer (flagged when weak), and the client-side change that
// brings the offer up to the baseline. Nothing here claims to match the
// offer unless it was built from it.
func noProposalRemedy(offer *ike.SA) []string {
	var out []string
	if offer != nil {
		if c, ok := strongestChoice(offer); ok {
			suite := suiteString(c.asProposal())
			weak := c.strength.Strength == ike.Weak || c.strength.Strength == ike.Unknown
			if sw, bad := c.strongSwanProposal(); bad == "" {
				out = append(out, sprintf(strongswanAcceptOffer, sw, suite, c.proposal))
			} else {
				out = append(out, sprintf(strongswanCannotSpell, suite, bad))
			}
			if pol, bad := c.rrasPolicy(); bad == "" {
				out = append(out, sprintf(rrasAcceptOffer, pol, suite))
			} else {
				out = append(out, sprintf(rrasCannotAccept, suite, bad))
			}
			if weak {
				out = append(out, sprintf(offerIsWeak, suite, strings.Join(weakReasons(c.strength), "; ")))
			}
		}
	}
	return append(out, windowsClientCrypto, strongswanInitiatorBaseline)
}
