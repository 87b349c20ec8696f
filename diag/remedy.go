package diag

import (
	"sort"

	"github.com/ikefrag/ikefrag/ike"
)

// Remedies, one place. Each line names the platform it applies to, so an
// operator can pick the one that runs the responder. The facts behind them:
//   - RRAS supports IKEv2 fragmentation from Windows Server 1803/2019, off by
//     default; the registry value EnableServerFragmentation turns it on after
//     a restart of RemoteAccess. Windows clients support it from Windows 10
//     1803.
//   - strongSwan: swanctl.conf `fragmentation = yes` (the default) fragments
//     when the peer supports it; `accept` announces support but never
//     fragments; strongswan.conf `charon.fragment_size` is the whole IP
//     datagram size of a fragment (default 1280).
//   - Fragmentation must be announced in IKE_SA_INIT by both peers; nothing
//     on the path can add it, because AUTH signs those messages.

const (
	rrasEnableFragmentation = `Windows RRAS (Server 1803/2019 or later): New-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Services\RemoteAccess\Parameters\Ikev2\' -Name EnableServerFragmentation -PropertyType DWORD -Value 1 -Force; Restart-Service RemoteAccess`
	strongswanFragYes       = `strongSwan: set "fragmentation = yes" in the connection (swanctl.conf; ipsec.conf "fragmentation=yes"); "accept" announces support but never fragments`
	strongswanFragSize      = `strongSwan: set "charon { fragment_size = %d }" in strongswan.conf (size of the whole IP datagram of each IKE fragment; default 1280) and restart charon`
	windowsClientFrag       = `Windows client: IKEv2 fragmentation needs Windows 10 1803 or later; older clients cannot use it`
	pathAllowFragments      = `Network: let IP fragments of UDP 500/4500 through the firewalls and NAT devices on the path (rules that match ports drop non-first fragments, which carry no UDP header)`
	smallerCerts            = `Certificates: shrink IKE_AUTH (ECDSA instead of RSA-4096 keys; do not send intermediates the peer already has), so it fits in fewer packets`
	rrasCustomPolicy        = `Windows RRAS: Set-VpnServerConfiguration -CustomPolicy -EncryptionMethod AES256 -IntegrityCheckMethod SHA256 -DHGroup Group14 -CipherTransformConstants AES256 -AuthenticationTransformConstants SHA256128 -PfsGroup PFS2048 -SALifeTimeSeconds 28800 -MMSALifeTimeSeconds 86400 -SADataSizeForRenegotiationKilobytes 1024000; Restart-Service RemoteAccess`
	windowsClientCrypto     = `Windows client: Set-VpnConnectionIPsecConfiguration -ConnectionName "<name>" -EncryptionMethod AES256 -IntegrityCheckMethod SHA256 -DHGroup Group14 -CipherTransformConstants AES256 -AuthenticationTransformConstants SHA256128 -PfsGroup PFS2048 -Force; Always On VPN ProfileXML: a <CryptographySuite> with the same values and <NativeProtocolType>IKEv2</NativeProtocolType> (not Automatic)`
	strongswanProposals     = `strongSwan: set "proposals = aes256-sha256-modp2048" (or aes256gcm16-prfsha384-ecp384) in the connection so that it matches what the peer offers`

	// NO_PROPOSAL_CHOSEN, built from the initiator's offer (proposal.go).
	strongswanAcceptOffer       = `strongSwan responder: add "%s" to the connection's "proposals" (swanctl.conf; ipsec.conf "ike=") to accept the strongest suite the initiator offered, %s (its proposal %d)`
	strongswanCannotSpell       = `strongSwan responder: the strongest suite offered, %s, has no strongSwan keyword for %s: change the initiator instead`
	rrasAcceptOffer             = `Windows RRAS: Set-VpnServerConfiguration -CustomPolicy %s (with the other -CustomPolicy values kept); Restart-Service RemoteAccess: accepts %s, the strongest suite offered`
	rrasCannotAccept            = `Windows RRAS cannot accept the strongest suite offered, %s: it has no setting for %s; change the initiator instead`
	offerIsWeak                 = `Warning: the strongest suite the initiator offers, %s, is below the baseline (%s): enabling it on the responder weakens the server for every client; prefer the initiator-side change`
	strongswanInitiatorBaseline = `strongSwan initiator: set "proposals = aes256-sha256-modp2048" (baseline; or aes256gcm16-prfsha384-ecp384) in the connection, and the same on the responder`

	// Evidence from this host's kernel (drop.go).
	nftAcceptICMPTooBig = `nftables on this host: accept ICMP fragmentation-needed and ICMPv6 packet-too-big before any drop rule: nft insert rule inet filter input icmp type destination-unreachable icmp code frag-needed accept; nft insert rule inet filter input icmpv6 type packet-too-big accept (and the same in the forward chain on a router)`
)

// remedies lists the fix for each verdict code. Codes with nothing to fix
// have none.
var remedies = map[Code][]string{
	FragmentsDropped:           {rrasEnableFragmentation, strongswanFragYes, windowsClientFrag, pathAllowFragments, smallerCerts},
	FragmentationNotNegotiated: {rrasEnableFragmentation, strongswanFragYes},
	NoProposalChosen:           {rrasCustomPolicy, windowsClientCrypto, strongswanProposals},
	InvalidKEPayload:           {`Initiator: put the responder's group first in its proposals (strongSwan "proposals" order; Windows -DHGroup of Set-VpnConnectionIPsecConfiguration) to save a round trip`},
	WeakCrypto:                 {rrasCustomPolicy, windowsClientCrypto, strongswanProposals},
	AuthenticationFailed:       {`Check the certificates (EKU, chain to a trusted root, subject/SAN matching the configured identity) or credentials on both peers; the responder's log names the reason`},
	UnansweredSAInit:           {`Network: check that UDP 500 and 4500 reach the responder and its answers come back (firewalls, NAT, security groups)`, `Responder: check that the IKE service is running and listening on the address the client targets (strongSwan: swanctl --list-conns; RRAS: Get-RemoteAccess)`},
	UnansweredIKEAuth:          {`Responder: read its log for this SPI: a dropped request (authentication or certificate error, no matching connection) is logged there`, pathAllowFragments},
	IKEv1:                      {ikev1MoveToV2},
	UnansweredIKEv1:            {unansweredNetwork, `Responder: check that it runs IKEv1 (ISAKMP) for this peer at all (strongSwan: a connection with "version = 1"; RRAS accepts IKEv1 only for L2TP/IPsec)`, ikev1MoveToV2},
	IKEAuthNotSeen:             {`Capture closer to the client, or on both sides of the firewall: an IKE_AUTH request whose first IP fragment is lost before this point never shows here`, pathAllowFragments, `Initiator: read its log for this SPI: it may have refused the IKE_SA_INIT response (proposal, KE, certificate request) and given up`},
	UnsolicitedResponses:       {`Nothing to change on the VPN: these are answers to requests this address did not send (reflection or scanning with a spoofed source). Rate-limit or drop unsolicited UDP 500/4500 toward it at the edge; if it does run IKE, check for a peer that answers with the roles reversed`},
	TCPFallback:                {tcpFallbackUDPPath, strongswanFragYes, rrasEnableFragmentation, smallerCerts},
	PMTUDBlackholeLocal:        {nftAcceptICMPTooBig, `iptables on this host: iptables -I INPUT -p icmp --icmp-type fragmentation-needed -j ACCEPT; ip6tables -I INPUT -p icmpv6 --icmpv6-type packet-too-big -j ACCEPT (and FORWARD on a router)`},
}

// remediesTCP replace remedies[code] for a verdict about messages carried
// over TCP (RFC 9329, tcp.go): nothing on a TCP leg is IP-fragmented and
// UDP 500/4500 is not what the client uses, so the UDP and fragment
// remedies do not apply.
var remediesTCP = map[Code][]string{
	UnansweredSAInit: {
		`Network: check that the TCP port the client connects to (RFC 9329 suggests 4500; 443 is common) reaches the responder, or ikefrag's proxy listener (proxy.tcp.listen) in front of it, and that its answers come back`,
		`Responder: it must accept IKE over TCP (RFC 9329). strongSwan does not: put ikefrag's proxy with proxy.tcp.listen in front of it, which relays the stream to its UDP port; libreswan needs "listen-tcp=yes"`,
	},
	UnansweredIKEAuth: {
		`Responder: read its log for this SPI: a dropped request (authentication or certificate error, no matching connection) is logged there`,
		`ikefrag's proxy in front of a UDP responder: ikefragctl peers shows the backend the stream was relayed to; its verdicts show whether that backend answered over UDP`,
	},
}

const (
	// tcpFallbackUDPPath: RFC 9329 §1 and §6 — TCP encapsulation is the
	// last resort; over it, TCP inside the tunnel suffers retransmission
	// on retransmission.
	tcpFallbackUDPPath = `Network: the UDP path is what failed: let UDP 500 and 4500, and their IP fragments, through the firewalls and NAT devices between client and server, so that clients stay on UDP (over TCP, RFC 9329, one lost segment stalls every tunnelled flow, and TCP inside the tunnel retransmits on top of TCP)`
	ikev1MoveToV2      = `Move the connection to IKEv2 (strongSwan "version = 2"; Windows: NativeProtocolType IKEv2)`
	unansweredNetwork  = `Network: check that UDP 500 and 4500 reach the responder and its answers come back (firewalls, NAT, security groups)`
)

// notifyInfo is what an error notify (RFC 7296 §3.10.1 and later RFCs)
// means and what to check on each platform. Its verdict code is the
// notify's IANA name.
type notifyInfo struct {
	means      string
	sev        Severity
	rras       string // Windows RRAS as the responder
	winClient  string // the Windows client as the initiator
	strongswan string
}

// errorNotifies lists the error notify types that become verdicts of their
// own name. NO_PROPOSAL_CHOSEN and INVALID_KE_PAYLOAD in IKE_SA_INIT and
// AUTHENTICATION_FAILED inside SK have richer verdicts of the same code.
var errorNotifies = map[ike.NotifyType]notifyInfo{
	ike.NotifyUnsupportedCriticalPayload: {"the receiver does not know a payload the sender marked critical (RFC 7296 §2.5)", Error,
		"RRAS: it does not implement the payload; remove the extension from the client's profile",
		"Windows client: it does not implement the payload; remove the extension (e.g. PPK, intermediate exchange) from the server's configuration",
		"strongSwan: the log names the payload type; disable the feature that sends it (ppk_id, intermediate exchanges, childless) on the peer"},
	ike.NotifyInvalidIKESPI: {"a message arrived for an IKE SA the receiver does not have (restarted peer, expired SA, or NAT mapping change)", Warning,
		"RRAS: a restart of RemoteAccess drops every IKE SA; clients reconnect",
		"Windows client: reconnect; if it repeats, check for a NAT device that changes the client's port (NAT keepalive interval)",
		`strongSwan: check that "dpd_delay" is set so stale SAs are found, and "unique" does not replace SAs the peer still uses`},
	ike.NotifyInvalidMajorVersion: {"the receiver does not speak this IKE major version", Error,
		"RRAS: it speaks IKEv2 only for IKEv2 VPN; use an IKEv2 profile",
		`Windows client: set the profile's tunnel type to IKEv2 (Set-VpnConnection -TunnelType Ikev2)`,
		`strongSwan: set "version = 2" (or 0 for either) in the connection`},
	ike.NotifyInvalidSyntax: {"the receiver found the message malformed, or its integrity check failed (RFC 7296 §3.10.1)", Error,
		"RRAS: look in the RemoteAccess event log and an IKEEXT trace (netsh wfp capture) for the malformed field",
		"Windows client: update Windows; the IKEEXT trace (netsh wfp capture) names the field",
		"strongSwan: raise 'charon.filelog ... ike = 2, enc = 2' and read which payload failed to parse; check for a middlebox that rewrites UDP 500/4500"},
	ike.NotifyInvalidMessageID: {"a Message ID outside the receiver's window (peers out of step after a loss or restart)", Warning,
		"RRAS: the client must reconnect; persistent occurrences mean packet reordering or loss on the path",
		"Windows client: reconnect",
		"strongSwan: reconnect; strongSwan resyncs with RFC 6311 only when both peers support it"},
	ike.NotifyInvalidSPI: {"an ESP/AH packet or request named a CHILD SA the receiver does not have", Warning,
		"RRAS: the CHILD SA was rekeyed or deleted; a reconnect re-creates it",
		"Windows client: reconnect",
		`strongSwan: check rekey and lifetime settings ("rekey_time", "life_time") on both peers`},
	ike.NotifyNoProposalChosen: {"no proposal in the request was acceptable to the responder", Error,
		rrasCustomPolicy, windowsClientCrypto, strongswanInitiatorBaseline},
	ike.NotifyInvalidKEPayload: {"the responder wants another key exchange group", Warning,
		"RRAS: put the client's group in -DHGroup / -PfsGroup of the custom policy",
		"Windows client: set -DHGroup / -PfsGroup of Set-VpnConnectionIPsecConfiguration to the group the server asks for",
		`strongSwan: put the responder's group first in "proposals" / "esp_proposals"`},
	ike.NotifyAuthenticationFailed: {"authentication failed", Error,
		"RRAS: check the server certificate (Server Authentication EKU, SAN = the name clients dial) and the NPS policy",
		"Windows client: check that the client trusts the server's root CA and the certificate's name matches the dialled name",
		"strongSwan: check certificates (EKU, chain, identity) and the configured remote identity; the log names the reason"},
	ike.NotifySinglePairRequired: {"the responder accepts only one pair of traffic selectors for this CHILD SA", Error,
		"RRAS: narrow the client's traffic selectors (split-tunnel routes) to one range",
		"Windows client: reduce the routes of a split tunnel, or use a full tunnel",
		`strongSwan: configure a single "local_ts" / "remote_ts" pair`},
	ike.NotifyNoAdditionalSAs: {"the responder refuses more CHILD SAs on this IKE SA", Error,
		"RRAS: raise the connection limit; one CHILD SA per client is the norm",
		"Windows client: do not open more than one tunnel to the same server",
		`strongSwan: check the responder's limits (charon.ikesa_limit, "unique", plugins that cap SAs)`},
	ike.NotifyInternalAddressFailure: {"the responder could not assign an inner address (address pool exhausted or none configured)", Error,
		"RRAS: enlarge the static address pool or check the DHCP server RRAS uses (Get-RemoteAccess, IPAddressRange)",
		"Windows client: nothing to change on the client; the server's pool is empty",
		`strongSwan: check "pools" in swanctl.conf and that it has free addresses (swanctl --list-pools --leases)`},
	ike.NotifyFailedCPRequired: {"the responder requires a configuration payload (virtual IP request) and none was sent", Error,
		"RRAS: clients must request an address; use an IKEv2 VPN profile, not a site-to-site one",
		"Windows client: use a VPN profile (not a raw IPsec policy) so that it requests an address",
		`strongSwan: set "vips = 0.0.0.0" (and/or "::") on the initiator's connection`},
	ike.NotifyTSUnacceptable: {"the responder found no policy matching the requested traffic selectors", Error,
		"RRAS: check the routes / split-tunnel ranges the client asks for against the server's configuration",
		"Windows client: align its routes (Add-VpnConnectionRoute) with what the server accepts",
		`strongSwan: make "local_ts" / "remote_ts" of both peers agree (or narrowable); the responder's log shows both sets`},
	ike.NotifyInvalidSelectors: {"an ESP packet did not match the CHILD SA's traffic selectors", Warning,
		"RRAS: check routing on the server for the inner ranges",
		"Windows client: check its inner routes",
		`strongSwan: check that "local_ts" / "remote_ts" cover the traffic actually sent`},
	ike.NotifyType(40): {"the addresses given in a MOBIKE update are not acceptable (RFC 4555)", Warning,
		"RRAS: MOBIKE is used by Windows clients on network change; check the server's address configuration",
		"Windows client: reconnect after the network change",
		`strongSwan: check "mobike" and the addresses of the responder`},
	ike.NotifyType(41): {"a NAT was detected where the peer forbids one (RFC 4555)", Error,
		"RRAS: allow NAT traversal (AssumeUDPEncapsulationContextOnSendRule on servers behind NAT)",
		"Windows client: behind NAT, the server must accept NAT-T",
		`strongSwan: remove "encap" restrictions; check the NAT devices on the path`},
	ike.NotifyTemporaryFailure: {"the responder cannot do this now (a rekey collision or resource shortage); the requester should retry later (RFC 7296 §2.25)", Warning,
		"RRAS: transient; if frequent, check the server's load and the rekey timers of both peers",
		"Windows client: transient; it retries",
		`strongSwan: transient; if frequent, offset "rekey_time" between peers so rekeys do not collide`},
	ike.NotifyChildSANotFound: {"a rekey or delete named a CHILD SA the responder no longer has (RFC 7296 §2.25)", Warning,
		"RRAS: transient after a restart or a collision",
		"Windows client: transient; it re-creates the CHILD SA",
		`strongSwan: transient; if frequent, offset "rekey_time" between peers`},
	ike.NotifyType(45): {"the group ID is unknown to the group controller (RFC 6407)", Error, "RRAS: not a group key server", "Windows client: not applicable", "strongSwan: check the group configuration"},
	ike.NotifyType(46): {"the peer is not authorized (RFC 6407, group key management)", Error, "RRAS: check the NPS authorization policy", "Windows client: check the user's or machine's group membership", "strongSwan: check the authorization rules (groups, eap identities)"},
	ike.NotifyType(47): {"the responder has no state for this session (RFC 8019 puzzle or resumption state lost)", Warning, "RRAS: transient; the client starts over", "Windows client: reconnect", "strongSwan: transient; the initiator starts over"},
	ike.NotifyType(48): {"the responder has no more queues for another CHILD SA of these selectors (RFC 9611)", Warning, "RRAS: not applicable", "Windows client: not applicable", `strongSwan: lower the per-CPU SA count ("per_cpu_sas") on the initiator`},
}

// espRemedies sizes the tunnel for the path: the inner MTU and TCP MSS
// that make every ESP datagram fit (esp.go computes them from the path MTU
// and the SA's overhead).
func espRemedies(mtu, mss4, mss6 int) []string {
	return []string{
		sprintf(`strongSwan (kernel IPsec): in strongswan.conf set charon.plugins.kernel-netlink.mtu = %d and charon.plugins.kernel-netlink.mss = %d (routes into the tunnel then carry that MTU and TCP MSS); restart charon`, mtu, mss4),
		sprintf(`strongSwan (kernel-libipsec, userspace ESP): set charon.plugins.kernel-libipsec.mtu = %d in strongswan.conf (the TUN device MTU; default 1400); restart charon`, mtu),
		sprintf(`nftables on the gateway: clamp TCP MSS on forwarded SYNs to the route MTU: nft add rule inet filter forward tcp flags syn tcp option maxseg size set rt mtu (with a route MTU of %d into the tunnel), or a fixed value: tcp option maxseg size set %d (IPv4) / %d (IPv6)`, mtu, mss4, mss6),
		sprintf(`Windows client: set the VPN interface MTU: netsh interface ipv4 set subinterface "<VPN connection name>" mtu=%d store=persistent (and ipv6 likewise); TCP MSS then follows (%s)`, mtu, tcpMSSNote(mss4, mss6)),
		pathAllowFragments,
	}
}

// CodeSeverity is a verdict code with a severity it is given with.
type CodeSeverity struct {
	Code     Code
	Severity Severity
}

// OtherVerdicts lists the verdicts not made by the evaluator's add calls:
// the error notifies (named after the notify; one of unknown type is an
// error) and the local path-MTU discovery black hole. With those add calls
// they are every (code, severity) the engine gives.
func OtherVerdicts() []CodeSeverity {
	out := []CodeSeverity{{PMTUDBlackholeLocal, Error}}
	for t, n := range errorNotifies {
		out = append(out, CodeSeverity{Code(t.String()), n.sev})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

func init() {
	for t, n := range errorNotifies {
		c := Code(t.String())
		if _, ok := remedies[c]; !ok {
			remedies[c] = []string{n.rras, n.winClient, n.strongswan}
		}
	}
}

// fragSizeRemedy builds the fragment-size remedy for a path MTU.
func fragSizeRemedy(mtu int) []string {
	if mtu <= 0 {
		mtu = 1280
	}
	return []string{
		sprintf(strongswanFragSize, mtu),
		`Windows: fragments are sized 576 (IPv4) / 1280 (IPv6) by the stack and cannot be configured; a path below that needs the network fixed`,
	}
}
