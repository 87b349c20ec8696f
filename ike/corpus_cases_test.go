package ike_test

// More exchanges of the shared corpus: NAT-T, cookies, FlexVPN, IPv6,
// weak groups, IKEv1, ESP only.

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/ikefrag/ikefrag/ike"
)

// #5: IKEv2 on 4500 from the start, three SAs, ESP-in-UDP.
func TestCorpusNATT(t *testing.T) {
	c := readCorpus(t, "scapy-ikev2_nat_t.pcapng")
	if len(c.msgs) != 30 || len(c.esp) != 24 {
		t.Fatalf("%d IKE, %d ESP-in-UDP; want 30, 24", len(c.msgs), len(c.esp))
	}
	for _, cm := range c.msgs {
		if !cm.f.Marker || (cm.d.Src.Port() != 10954 && cm.d.Dst.Port() != 10954) {
			t.Errorf("frame %d: marker %v ports %d→%d", cm.frame, cm.f.Marker, cm.d.Src.Port(), cm.d.Dst.Port())
		}
		if cm.m.HasNotify(ike.NotifyNATDetectionSourceIP) || cm.m.HasNotify(ike.NotifyNATDetectionDestinationIP) {
			t.Errorf("frame %d: NAT-D notify", cm.frame)
		}
	}
	espSPIs := map[uint32]int{}
	for _, d := range c.esp {
		espSPIs[ike.DefaultPorts.Classify(d.Src.Port(), d.Dst.Port(), d.Payload).SPI]++
	}
	for _, spi := range []uint32{0xac0faf03, 0xc1a9656b, 0x958a753b, 0x78bd5377, 0xb6b5f296, 0xc1d717e8} {
		if espSPIs[spi] != 4 {
			t.Errorf("ESP SPI %#x: %d frames, want 4", spi, espSPIs[spi])
		}
	}
	for _, sa := range []struct {
		first int
		ispi  string
		encr  ike.EncrID
		integ ike.IntegID
	}{
		{1, "89922c915f35570e", ike.EncrAESGCM16, ike.IntegNone},
		{19, "99feb3adea1ee8f8", ike.EncrAESCTR, ike.IntegHMACSHA2_256128},
		{37, "5a64e0edca3a3614", ike.EncrAESCBC, ike.IntegHMACSHA2_256128},
	} {
		req, resp := c.frame(t, sa.first), c.frame(t, sa.first+1)
		if req.m.SPIi.String() != sa.ispi || req.m.Exchange != ike.ExchangeIKESAInit || req.m.Flags.Response() || !resp.m.Flags.Response() {
			t.Errorf("frame %d: %s", sa.first, req.m.Summary())
		}
		for _, cm := range []*corpusMsg{req, resp} {
			ps := cm.m.SA().Proposals
			if len(ps) != 1 {
				t.Fatalf("frame %d: %d proposals", cm.frame, len(ps))
			}
			wantSuite(t, cm.frame, ps[0].Suite(), sa.encr, 256, ike.PRFHMACSHA2_256, sa.integ, ike.GroupECP256)
		}
		for _, n := range []ike.NotifyType{16430, 16406, 16431} {
			if !req.m.HasNotify(n) {
				t.Errorf("frame %d: no %s", req.frame, n)
			}
		}
		for _, n := range []ike.NotifyType{16430, 16431, 16404} {
			if !resp.m.HasNotify(n) {
				t.Errorf("frame %d: no %s", resp.frame, n)
			}
		}
		if resp.m.Find(ike.PayloadCERTREQ) == nil {
			t.Errorf("frame %d: no CERTREQ", resp.frame)
		}
		var reqVIDs, respVIDs []string
		for _, v := range req.m.VendorIDs() {
			reqVIDs = append(reqVIDs, v.Name())
		}
		for _, v := range resp.m.VendorIDs() {
			respVIDs = append(respVIDs, v.Name())
		}
		if len(reqVIDs) != 4 || reqVIDs[2] != "Cisco Fragmentation" || reqVIDs[3] != "Cisco Fragmentation" {
			t.Errorf("frame %d: VIDs %q", req.frame, reqVIDs)
		}
		if len(respVIDs) != 4 || slices.Index(respVIDs, "Cisco Fragmentation") < 0 {
			t.Errorf("frame %d: VIDs %q", resp.frame, respVIDs)
		}
		for _, cm := range []*corpusMsg{c.frame(t, sa.first+2), c.frame(t, sa.first+3)} {
			if cm.m.Exchange != ike.ExchangeIKEAuth || cm.m.Length < 1272 || cm.m.Length > 1296 || cm.d.Fragmented() {
				t.Errorf("frame %d: %s len %d", cm.frame, cm.m.Summary(), cm.m.Length)
			}
		}
		// Three INFORMATIONAL pairs: flags 0x08/0x20, 0x00/0x28, 0x08/0x20;
		// requests carry a Delete inside SK.
		for i, flags := range []uint8{0x08, 0x20, 0x00, 0x28, 0x08, 0x20} {
			cm := c.frame(t, sa.first+12+i)
			if cm.m.Exchange != ike.ExchangeInformational || uint8(cm.m.Flags) != flags {
				t.Errorf("frame %d: %s flags %#x, want %#x", cm.frame, cm.m.Summary(), uint8(cm.m.Flags), flags)
			}
			if sk := cm.m.Payloads[0].Body.(*ike.Encrypted); !cm.m.Flags.Response() != (sk.NextPayload == ike.PayloadDelete) {
				t.Errorf("frame %d: SK inner %s", cm.frame, sk.NextPayload)
			}
		}
	}
}

// #6: COOKIE round trip, weak offer, CREATE_CHILD_SA, an orphan INFORMATIONAL.
func TestCorpusCookie(t *testing.T) {
	c := readCorpus(t, "tcpdump-ikev2four.pcap")
	if len(c.msgs) != 21 {
		t.Fatalf("%d IKE messages, want 21", len(c.msgs))
	}
	f1 := c.frame(t, 1).m
	if f1.SPIi.String() != "a88875a8198992a6" {
		t.Errorf("frame 1 SPIi %s", f1.SPIi)
	}
	offer := f1.SA().Proposals
	if len(offer) != 1 || len(offer[0].Transforms) != 12 {
		t.Fatalf("frame 1: %d proposals", len(offer))
	}
	var got []string
	for _, tr := range offer[0].Transforms {
		got = append(got, tr.String())
	}
	want := []string{"ENCR_AES_CBC-128", "ENCR_AES_CBC-256", "ENCR_AES_CBC-192", "ENCR_3DES",
		"PRF_HMAC_SHA1", "PRF_HMAC_MD5", "PRF_AES128_XCBC",
		"AUTH_HMAC_SHA1_96", "AUTH_HMAC_MD5_96", "AUTH_AES_XCBC_96",
		"DH group 2 (MODP_1024)", "DH group 14 (MODP_2048)"}
	if !slices.Equal(got, want) {
		t.Errorf("frame 1 transforms %q", got)
	}
	if v := offer[0].Strength(); v.Strength != ike.Weak || len(v.Reasons) != 12 {
		t.Errorf("offer verdict %+v", v)
	}
	if f1.KE().Group != 2 || !slices.Equal(notifyTypes(f1), []ike.NotifyType{16388, 16389}) {
		t.Errorf("frame 1: %s", f1.Summary())
	}
	f2 := c.frame(t, 2).m
	if len(f2.Payloads) != 1 || !f2.HasNotify(ike.NotifyCookie) || !f2.SPIr.IsZero() {
		t.Errorf("frame 2: %s", f2.Summary())
	}
	f3 := c.frame(t, 3).m
	if f3.Payloads[0].Type != ike.PayloadNotify || f3.Notifies()[0].Type != ike.NotifyCookie ||
		!bytes.Equal(f3.Notifies()[0].Data, f2.Notifies()[0].Data) {
		t.Errorf("frame 3: %s, want the COOKIE first", f3.Summary())
	}
	f4 := c.frame(t, 4)
	if f4.m.SPIr.String() != "71be8358efae7663" {
		t.Errorf("frame 4 SPIr %s", f4.m.SPIr)
	}
	wantSuite(t, 4, chosen(t, f4).Suite(), ike.EncrAESCBC, 128, ike.PRFHMACSHA1, ike.IntegHMACSHA1_96, ike.GroupMODP1024)
	if !f4.m.HasNotify(16388) || !f4.m.HasNotify(16389) {
		t.Errorf("frame 4: %s", f4.m.Summary())
	}
	for _, n := range []int{5, 6} {
		if m := c.frame(t, n).m; m.Exchange != ike.ExchangeIKEAuth || m.MessageID != 1 {
			t.Errorf("frame %d: %s", n, m.Summary())
		}
	}
	mids := map[uint32]int{}
	for n := 7; n <= 20; n++ {
		m := c.frame(t, n).m
		if m.Exchange != ike.ExchangeCreateChildSA {
			t.Errorf("frame %d: %s", n, m.Summary())
		}
		mids[m.MessageID]++
	}
	for mid := uint32(2); mid <= 8; mid++ {
		if mids[mid] != 2 {
			t.Errorf("CREATE_CHILD_SA message ID %d: %d messages, want a pair", mid, mids[mid])
		}
	}
	f21 := c.frame(t, 21).m
	if f21.Exchange != ike.ExchangeInformational || f21.MessageID != 0 ||
		f21.SPIi.String() != "1d9be9451d4f97a8" || f21.SPIr.String() != "64a2a4b5d0e17b6a" {
		t.Errorf("frame 21: %s", f21.Header.String())
	}
}

// #7: Cisco FlexVPN on 500 and plain ESP.
func TestCorpusFlexVPN(t *testing.T) {
	c := readCorpus(t, "nDPI-esp.pcapng")
	if len(c.msgs) != 4 || len(c.nonUDP) != 2 {
		t.Fatalf("%d IKE, %d non-UDP; want 4, 2", len(c.msgs), len(c.nonUDP))
	}
	for _, d := range c.nonUDP {
		if d.Proto != 50 {
			t.Errorf("frame %d: protocol %d, want ESP", d.Frame, d.Proto)
		}
	}
	for _, n := range []int{1, 2} {
		cm := c.frame(t, n)
		ps := cm.m.SA().Proposals
		if len(ps) != 1 {
			t.Fatalf("frame %d: %d proposals", n, len(ps))
		}
		wantSuite(t, n, ps[0].Suite(), ike.EncrAESCBC, 256, ike.PRFHMACSHA2_384, ike.IntegHMACSHA2_384192, ike.GroupECP384)
		if v := ps[0].Strength(); v.Strength != ike.Strong {
			t.Errorf("frame %d: verdict %+v", n, v)
		}
		if cm.m.KE().Group != ike.GroupECP384 || !cm.m.HasNotify(16388) || !cm.m.HasNotify(16389) {
			t.Errorf("frame %d: %s", n, cm.m.Summary())
		}
		var vids []string
		for _, v := range cm.m.VendorIDs() {
			vids = append(vids, v.Name())
		}
		if !slices.Equal(vids, []string{"CISCO-DELETE-REASON", "CISCOVPN-REV-02", "CISCO-DYNAMIC-ROUTE", "FLEXVPN-SUPPORTED"}) {
			t.Errorf("frame %d: VIDs %q", n, vids)
		}
	}
	if s := c.frame(t, 1).m.SPIi.String(); s != "05ac0f4d122013f4" {
		t.Errorf("SPIi %s", s)
	}
	if s := c.frame(t, 2).m.SPIr.String(); s != "5f46ee70bc4c5d0d" {
		t.Errorf("SPIr %s", s)
	}
	for n, length := range map[int]uint32{3: 344, 4: 296} {
		m := c.frame(t, n).m
		if sk, ok := m.Payloads[0].Body.(*ike.Encrypted); !ok || sk.NextPayload != ike.PayloadVendorID || m.Length != length || m.Exchange != ike.ExchangeIKEAuth {
			t.Errorf("frame %d: %s len %d", n, m.Summary(), m.Length)
		}
	}
}

// #8: IPv6, a byte-identical IKE_SA_INIT retransmission 40 s later.
func TestCorpusIPv6Retransmission(t *testing.T) {
	c := readCorpus(t, "arkime-IKEv2.pcap")
	if len(c.msgs) != 35 || len(c.nonUDP) != 162 {
		t.Fatalf("%d IKE, %d non-UDP; want 35, 162", len(c.msgs), len(c.nonUDP))
	}
	inits := 0
	for _, cm := range c.msgs {
		if !cm.d.Src.Addr().Is6() || cm.d.Src.Port() != 500 {
			t.Errorf("frame %d: %s", cm.frame, cm.d.Src)
		}
		m := cm.m
		if m.Exchange != ike.ExchangeIKESAInit {
			continue
		}
		inits++
		ps := m.SA().Proposals
		if len(ps) != 1 {
			t.Fatalf("frame %d: %d proposals", cm.frame, len(ps))
		}
		wantSuite(t, cm.frame, ps[0].Suite(), ike.EncrAESCBC, 256, ike.PRFHMACSHA2_512, ike.IntegHMACSHA2_512256, ike.GroupECP384)
		if m.KE().Group != ike.GroupECP384 || len(m.Notifies()) != 0 || len(m.VendorIDs()) != 0 {
			t.Errorf("frame %d: %s", cm.frame, m.Summary())
		}
	}
	if inits == 0 {
		t.Error("no IKE_SA_INIT")
	}
	f1, f38 := c.frame(t, 1), c.frame(t, 38)
	if !bytes.Equal(f1.raw, f38.raw) || f1.m.SPIi.String() != "e5bc67550fd4d3ea" {
		t.Errorf("frame 38 is not a byte-identical retransmission of frame 1")
	}
	if d := f38.d.Time.Sub(f1.d.Time).Seconds(); d < 39.5 || d > 40.5 {
		t.Errorf("retransmission after %.1f s, want 40", d)
	}
	if s := c.frame(t, 2).m.SPIi.String(); s != "8e7779464044673e" {
		t.Errorf("frame 2 SPIi %s", s)
	}
	for n, flags := range map[int]uint8{50: 0x00, 53: 0x28} {
		if m := c.frame(t, n).m; m.Exchange != ike.ExchangeCreateChildSA || uint8(m.Flags) != flags {
			t.Errorf("frame %d: %s flags %#x", n, m.Summary(), uint8(m.Flags))
		}
	}
}

// #9: one IKE_SA_INIT offering DH group 2, payloads in an unusual order.
func TestCorpusWeakDH(t *testing.T) {
	c := readCorpus(t, "suricata-verify-IKEv2_SA_INIT_2-8-weak.pcap")
	if len(c.msgs) != 1 {
		t.Fatalf("%d IKE messages, want 1", len(c.msgs))
	}
	m := c.frame(t, 1).m
	if uint8(m.Flags) != 0x08 || m.Length != 240 || m.SPIi.String() != "61d3693ce12af528" || m.Exchange != ike.ExchangeIKESAInit {
		t.Errorf("frame 1: %s", m.Summary())
	}
	if got := m.PayloadTypes(); !slices.Equal(got, []ike.PayloadType{ike.PayloadNonce, ike.PayloadKE, ike.PayloadSA}) {
		t.Errorf("payload order %v", got)
	}
	ps := m.SA().Proposals
	if len(ps) != 1 {
		t.Fatalf("%d proposals", len(ps))
	}
	wantSuite(t, 1, ps[0].Suite(), ike.EncrAESCBC, 256, ike.PRFHMACSHA2_256, ike.IntegHMACSHA2_256128, ike.GroupMODP1024)
	v := ps[0].Strength()
	if v.Strength != ike.Weak || !strings.Contains(strings.Join(v.Reasons, ";"), "DH group 2 (MODP_1024): weak") {
		t.Errorf("verdict %+v", v)
	}
	if m.KE().Group != 2 || len(m.Notifies()) != 0 {
		t.Errorf("frame 1: %s", m.Summary())
	}
}

// #10–#15: IKEv1 captures decode as IKEv1 headers only.
func TestCorpusIKEv1(t *testing.T) {
	for _, tc := range []struct {
		name      string
		msgs      int
		exchanges []ike.ExchangeType // nil: not checked
		esp       int                // ESP-in-UDP
		keepalive []int              // frames
	}{
		{"zeek-spicy-ipsec-ipsec.cap", 11, []ike.ExchangeType{2, 2, 5, 2, 2, 2, 2, 2, 32, 32, 32}, 0, nil},
		{"tcpdump-isakmp4500.pcap", 15, nil, 8, []int{18, 23, 28, 34}},
		{"zeek-spicy-ipsec-ipsec-ikev1-isakmp-aggressive-mode.pcap", 6, []ike.ExchangeType{4, 4, 4, 32, 32, 32}, 0, nil},
		{"zeek-spicy-ipsec-ikev1-certs.pcap", 10, nil, 0, nil},
		{"arkime-IKEv1.pcap", 13, nil, 0, nil},
		{"tcpdump-ISAKMP_sa_setup.pcap", 9, []ike.ExchangeType{2, 2, 2, 2, 2, 2, 32, 32, 32}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := readCorpus(t, tc.name)
			if len(c.msgs) != tc.msgs || len(c.esp) != tc.esp {
				t.Fatalf("%d IKE, %d ESP-in-UDP; want %d, %d", len(c.msgs), len(c.esp), tc.msgs, tc.esp)
			}
			for _, cm := range c.msgs {
				if cm.err != nil || !cm.m.IsIKEv1() || !ike.IsIKEv1(cm.raw) || cm.m.Payloads != nil || cm.m.MinorVersion != 0 {
					t.Errorf("frame %d: not an IKEv1 header-only message: %v", cm.frame, cm.err)
				}
				if len(cm.m.Notifies()) != 0 {
					t.Errorf("frame %d: IKEv1 notify reported", cm.frame)
				}
			}
			if tc.exchanges != nil {
				if got := exchanges(c.msgs); !slices.Equal(got, tc.exchanges) {
					t.Errorf("exchanges %v, want %v", got, tc.exchanges)
				}
			}
			var ka []int
			for _, d := range c.keepalive {
				ka = append(ka, d.Frame)
			}
			if !slices.Equal(ka, tc.keepalive) {
				t.Errorf("keepalives in frames %v, want %v", ka, tc.keepalive)
			}
		})
	}

	// The IKEv1 Informational with NO-PROPOSAL-CHOSEN must not pass for the
	// IKEv2 notify: it names as an IKEv1 exchange and carries no IKEv2 notify.
	c := readCorpus(t, "zeek-spicy-ipsec-ipsec.cap")
	f3 := c.frame(t, 3)
	if ike.ExchangeName(f3.m.Header) != "Informational" || f3.m.HasNotify(ike.NotifyNoProposalChosen) || !f3.m.SPIr.IsZero() {
		t.Errorf("frame 3: %s", f3.m.Summary())
	}
	if !bytes.Equal(c.frame(t, 2).raw, c.frame(t, 4).raw) {
		t.Error("frame 4 is not a byte-identical retransmission of frame 2")
	}
	// NAT-T IKEv1: Main Mode moves from 500 to 4500 behind the marker.
	c = readCorpus(t, "tcpdump-isakmp4500.pcap")
	for _, cm := range c.msgs {
		if onNATT := cm.d.Dst.Port() == 4500; onNATT != (cm.frame >= 7) || onNATT != cm.f.Marker {
			t.Errorf("frame %d: port %d marker %v", cm.frame, cm.d.Dst.Port(), cm.f.Marker)
		}
	}
	for _, d := range c.esp {
		if f := ike.DefaultPorts.Classify(d.Src.Port(), d.Dst.Port(), d.Payload); f.SPI != 0xf4dc0ae5 {
			t.Errorf("frame %d: ESP SPI %#x", d.Frame, f.SPI)
		}
	}
}

// #16–#19: ESP only, no IKE; IP-fragmented ESP is not IKE.
func TestCorpusESPOnly(t *testing.T) {
	for _, tc := range []struct {
		name       string
		espInUDP   int
		plainESP   int
		fragmented int
	}{
		{"tcpdump-espudp1.pcap", 8, 0, 0},
		{"tcpdump-02-sunrise-sunset-esp.pcap", 0, 8, 0},
		{"libreswan-espfrags1.pcap", 0, 8, 8},
		{"zeek-ip6_esp.pcap", 0, 120, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := readCorpus(t, tc.name)
			if len(c.msgs)+len(c.keepalive)+len(c.invalid) != 0 {
				t.Errorf("%d IKE messages, %d keepalives, %d invalid; want none", len(c.msgs), len(c.keepalive), len(c.invalid))
			}
			if len(c.esp) != tc.espInUDP {
				t.Errorf("%d ESP-in-UDP, want %d", len(c.esp), tc.espInUDP)
			}
			for _, d := range c.esp {
				if f := ike.DefaultPorts.Classify(d.Src.Port(), d.Dst.Port(), d.Payload); f.SPI != 0x12345678 {
					t.Errorf("frame %d: SPI %#x", d.Frame, f.SPI)
				}
			}
			plain, frag := 0, 0
			for _, d := range c.nonUDP {
				if d.Proto == 50 {
					plain++
					if d.Fragmented() {
						frag++
					}
				}
			}
			if plain != tc.plainESP || frag != tc.fragmented {
				t.Errorf("%d plain ESP (%d IP-fragmented), want %d (%d)", plain, frag, tc.plainESP, tc.fragmented)
			}
		})
	}
}

// #3: REDIRECT, then NO_PROPOSAL_CHOSEN from the second gateway.
func TestCorpusRedirect(t *testing.T) {
	c := readCorpus(t, "scapy-ikev2_notify_redirect.pcap")
	if len(c.msgs) != 4 {
		t.Fatalf("%d IKE messages, want 4", len(c.msgs))
	}
	for _, tc := range []struct {
		frame   int
		flags   uint8
		length  uint32
		ispi    string
		notifys []ike.NotifyType
	}{
		{1, 0x08, 272, "88694881497528ad", []ike.NotifyType{16389, 16388, 16430, 16406, 16431}},
		{2, 0x20, 106, "88694881497528ad", []ike.NotifyType{ike.NotifyRedirect}},
		{3, 0x08, 278, "1c88ee0b7793d52e", []ike.NotifyType{16389, 16388, 16430, 16408, 16431}},
		{4, 0x20, 36, "1c88ee0b7793d52e", []ike.NotifyType{ike.NotifyNoProposalChosen}},
	} {
		cm := c.frame(t, tc.frame)
		m := cm.m
		if m.Exchange != ike.ExchangeIKESAInit || uint8(m.Flags) != tc.flags || m.Length != tc.length || m.SPIi.String() != tc.ispi {
			t.Errorf("frame %d: %s flags %#x len %d", tc.frame, m.Summary(), uint8(m.Flags), m.Length)
		}
		if got := notifyTypes(m); !slices.Equal(got, tc.notifys) {
			t.Errorf("frame %d: notifies %v, want %v", tc.frame, got, tc.notifys)
		}
		if !m.Flags.Response() {
			if cm.d.Src.Port() != 10952 || cm.f.Marker {
				t.Errorf("frame %d: from port %d, marker %v", tc.frame, cm.d.Src.Port(), cm.f.Marker)
			}
			p := m.SA().Proposals
			if len(p) != 1 {
				t.Fatalf("frame %d: %d proposals", tc.frame, len(p))
			}
			wantSuite(t, tc.frame, p[0].Suite(), ike.EncrAESGCM16, 256, ike.PRFHMACSHA2_256, ike.IntegNone, 28)
			if m.KE().Group != 28 {
				t.Errorf("frame %d: KE group %s", tc.frame, m.KE().Group)
			}
		} else if len(m.Payloads) != 1 {
			t.Errorf("frame %d: %s, want the notify alone", tc.frame, m.Summary())
		}
	}
	if m := c.frame(t, 2).m; !m.SPIr.IsZero() {
		t.Errorf("frame 2: SPIr %s, want zero", m.SPIr)
	}
	if m := c.frame(t, 4).m; m.SPIr.String() != "63cc9c1919de33e7" || !m.Notify(ike.NotifyNoProposalChosen).Type.IsError() {
		t.Errorf("frame 4: SPIr %s", m.SPIr)
	}
	if gw, ok := c.frame(t, 2).m.Notify(ike.NotifyRedirect).Gateway(); !ok || gw == "" {
		t.Errorf("frame 2: REDIRECT gateway %q %v", gw, ok)
	}
}

// #4: many SAs from one NATed client; COOKIE, INVALID_KE_PAYLOAD, ESP-in-UDP.
func TestCorpusInvalidKE(t *testing.T) {
	c := readCorpus(t, "nDPI-ipsec_isakmp_esp.pcap")
	if len(c.msgs) != 519 || len(c.esp) != 315 || len(c.keepalive)+len(c.nonUDP) != 0 {
		t.Fatalf("%d IKE, %d ESP-in-UDP, %d keepalive, %d non-UDP; want 519, 315, 0, 0",
			len(c.msgs), len(c.esp), len(c.keepalive), len(c.nonUDP))
	}
	counts := map[[2]int]int{} // exchange, flags → messages (from the header, which always parses)
	for _, cm := range c.msgs {
		h, err := ike.ParseHeader(cm.raw)
		if err != nil {
			t.Fatal(err)
		}
		counts[[2]int{int(h.Exchange), int(h.Flags)}]++
	}
	for k, want := range map[[2]int]int{{34, 0x08}: 139, {34, 0x20}: 139, {34, 0xff}: 1, {35, 0x08}: 111, {35, 0x20}: 111, {37, 0x00}: 18} {
		if counts[k] != want {
			t.Errorf("exchange %d flags %#x: %d messages, want %d", k[0], k[1], counts[k], want)
		}
	}
	if len(counts) != 6 {
		t.Errorf("exchange/flags combinations %v", counts)
	}
	for _, cm := range c.msgs {
		if cm.m != nil && cm.m.Exchange == ike.ExchangeIKEAuth && cm.d.Dst.Port() != 4500 && cm.d.Src.Port() != 4500 {
			t.Errorf("frame %d: IKE_AUTH off port 4500", cm.frame)
		}
	}
	if m := c.frame(t, 207).m; uint8(m.Flags) != 0xff || len(m.SA().Proposals) != 2 {
		t.Errorf("frame 207: flags %#x, %s", uint8(m.Flags), m.Summary())
	}

	notifies := map[ike.NotifyType]int{}
	keGroups := map[ike.DHGroup]int{}
	var cookieOnly, invalidKE, withSA, chose2, chose14 int
	var invalidFrames []int
	for _, cm := range c.ikev2() {
		m := cm.m
		for _, n := range m.Notifies() {
			notifies[n.Type]++
		}
		if ke := m.KE(); ke != nil {
			keGroups[ke.Group]++
		}
		if m.Exchange != ike.ExchangeIKESAInit || uint8(m.Flags) != 0x20 {
			continue
		}
		switch {
		case len(m.Payloads) == 1 && m.HasNotify(ike.NotifyCookie):
			cookieOnly++
		case m.HasNotify(ike.NotifyInvalidKEPayload):
			invalidKE++
			invalidFrames = append(invalidFrames, cm.frame)
			if g, ok := m.Notify(ike.NotifyInvalidKEPayload).AcceptedGroup(); !ok || g != ike.GroupMODP2048 {
				t.Errorf("frame %d: INVALID_KE_PAYLOAD accepts %v %v, want group 14", cm.frame, g, ok)
			}
		case m.SA() != nil:
			withSA++
			p := chosen(t, cm)
			s := p.Suite()
			switch s.DH {
			case ike.GroupMODP1024:
				chose2++
			case ike.GroupMODP2048:
				chose14++
			}
			wantSuite(t, cm.frame, s, ike.EncrAESCBC, 256, ike.PRFHMACSHA1, ike.IntegHMACSHA1_96, s.DH)
			if p.Strength().Strength != ike.Weak {
				t.Errorf("frame %d: SHA-1 suite not weak", cm.frame)
			}
		}
	}
	if cookieOnly != 70 || invalidKE != 3 || withSA != 66 || chose2 != 63 || chose14 != 3 {
		t.Errorf("responses: %d COOKIE-only, %d INVALID_KE, %d with SA (%d MODP_1024, %d MODP_2048); want 70, 3, 66 (63, 3)",
			cookieOnly, invalidKE, withSA, chose2, chose14)
	}
	if !slices.Equal(invalidFrames, []int{263, 619, 704}) {
		t.Errorf("INVALID_KE_PAYLOAD in frames %v, want 263, 619, 704", invalidFrames)
	}
	for typ, want := range map[ike.NotifyType]int{16388: 206, 16389: 206, 16390: 140, 17: 3} {
		if notifies[typ] != want {
			t.Errorf("%s: %d notifies, want %d", typ, notifies[typ], want)
		}
	}
	if len(notifies) != 4 {
		t.Errorf("notify types %v", notifies)
	}
	if keGroups[2] != 197 || keGroups[14] != 9 || len(keGroups) != 2 {
		t.Errorf("KE groups %v, want 2×197, 14×9", keGroups)
	}
	// The INVALID_KE sequence: new SPIi and KE group 14 after the notify.
	if m := c.frame(t, 260).m; m.SPIi.String() != "6e09515392eb66e7" || m.KE().Group != 2 {
		t.Errorf("frame 260: %s", m.Summary())
	}
	if m := c.frame(t, 264).m; m.SPIi.String() != "57555a603383702d" || m.KE().Group != 14 {
		t.Errorf("frame 264: %s", m.Summary())
	}
	if p := chosen(t, c.frame(t, 267)); p.Suite().DH != ike.GroupMODP2048 {
		t.Errorf("frame 267 chose %s", p.Suite())
	}
}
