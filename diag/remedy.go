package diag

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
	IKEv1:                      {`Move the connection to IKEv2 (strongSwan "version = 2"; Windows: NativeProtocolType IKEv2)`},
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
