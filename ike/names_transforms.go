package ike

// Protocol IDs and transform types and IDs (IANA "Internet Key Exchange
// Version 2 (IKEv2) Parameters"), with their names.

// ProtocolID is a Security Protocol Identifier (RFC 7296 §3.3.1).
type ProtocolID uint8

const (
	ProtocolNone ProtocolID = 0
	ProtocolIKE  ProtocolID = 1
	ProtocolAH   ProtocolID = 2
	ProtocolESP  ProtocolID = 3
)

var protocolNames = map[ProtocolID]string{
	0: "NONE",
	1: "IKE",
	2: "AH",
	3: "ESP",
	4: "FC_ESP_HEADER",
	5: "FC_CT_AUTHENTICATION",
	6: "GIKE_UPDATE",
}

func (p ProtocolID) String() string { return lookup(protocolNames, p, "PROTOCOL") }

// TransformType is a transform type (RFC 7296 §3.3.2, RFC 9370).
type TransformType uint8

const (
	TransformENCR   TransformType = 1 // Encryption Algorithm
	TransformPRF    TransformType = 2 // Pseudorandom Function
	TransformINTEG  TransformType = 3 // Integrity Algorithm
	TransformDH     TransformType = 4 // Key Exchange Method (Diffie-Hellman group)
	TransformESN    TransformType = 5 // Sequence Numbers (Extended Sequence Numbers)
	TransformADDKE1 TransformType = 6 // Additional Key Exchange 1 (RFC 9370)
	TransformADDKE7 TransformType = 12
)

var transformTypeNames = map[TransformType]string{
	1:  "ENCR",
	2:  "PRF",
	3:  "INTEG",
	4:  "KE",
	5:  "ESN",
	6:  "ADDKE1",
	7:  "ADDKE2",
	8:  "ADDKE3",
	9:  "ADDKE4",
	10: "ADDKE5",
	11: "ADDKE6",
	12: "ADDKE7",
}

func (t TransformType) String() string { return lookup(transformTypeNames, t, "TRANSFORM") }

// IsAdditionalKE reports whether t is one of ADDKE1..ADDKE7 (RFC 9370).
func (t TransformType) IsAdditionalKE() bool { return t >= TransformADDKE1 && t <= TransformADDKE7 }

// EncrID is a Transform ID of transform type 1 (encryption algorithm).
type EncrID uint16

const (
	EncrDESIV64             EncrID = 1
	EncrDES                 EncrID = 2
	Encr3DES                EncrID = 3
	EncrRC5                 EncrID = 4
	EncrIDEA                EncrID = 5
	EncrCAST                EncrID = 6
	EncrBlowfish            EncrID = 7
	Encr3IDEA               EncrID = 8
	EncrDESIV32             EncrID = 9
	EncrNULL                EncrID = 11
	EncrAESCBC              EncrID = 12
	EncrAESCTR              EncrID = 13
	EncrAESCCM8             EncrID = 14
	EncrAESCCM12            EncrID = 15
	EncrAESCCM16            EncrID = 16
	EncrAESGCM8             EncrID = 18
	EncrAESGCM12            EncrID = 19
	EncrAESGCM16            EncrID = 20
	EncrNullAuthAESGMAC     EncrID = 21
	EncrCamelliaCBC         EncrID = 23
	EncrCamelliaCTR         EncrID = 24
	EncrCamelliaCCM8        EncrID = 25
	EncrCamelliaCCM12       EncrID = 26
	EncrCamelliaCCM16       EncrID = 27
	EncrChaCha20Poly1305    EncrID = 28
	EncrAESCCM8IIV          EncrID = 29
	EncrAESGCM16IIV         EncrID = 30
	EncrChaCha20Poly1305IIV EncrID = 31
)

var encrNames = map[EncrID]string{
	1:  "ENCR_DES_IV64",
	2:  "ENCR_DES",
	3:  "ENCR_3DES",
	4:  "ENCR_RC5",
	5:  "ENCR_IDEA",
	6:  "ENCR_CAST",
	7:  "ENCR_BLOWFISH",
	8:  "ENCR_3IDEA",
	9:  "ENCR_DES_IV32",
	11: "ENCR_NULL",
	12: "ENCR_AES_CBC",
	13: "ENCR_AES_CTR",
	14: "ENCR_AES_CCM_8",
	15: "ENCR_AES_CCM_12",
	16: "ENCR_AES_CCM_16",
	18: "ENCR_AES_GCM_8",
	19: "ENCR_AES_GCM_12",
	20: "ENCR_AES_GCM_16",
	21: "ENCR_NULL_AUTH_AES_GMAC",
	23: "ENCR_CAMELLIA_CBC",
	24: "ENCR_CAMELLIA_CTR",
	25: "ENCR_CAMELLIA_CCM_8",
	26: "ENCR_CAMELLIA_CCM_12",
	27: "ENCR_CAMELLIA_CCM_16",
	28: "ENCR_CHACHA20_POLY1305",
	29: "ENCR_AES_CCM_8_IIV",
	30: "ENCR_AES_GCM_16_IIV",
	31: "ENCR_CHACHA20_POLY1305_IIV",
	32: "ENCR_KUZNYECHIK_MGM_KTREE",
	33: "ENCR_MAGMA_MGM_KTREE",
	34: "ENCR_KUZNYECHIK_MGM_MAC_KTREE",
	35: "ENCR_MAGMA_MGM_MAC_KTREE",
}

func (id EncrID) String() string { return lookup(encrNames, id, "ENCR") }

// IsAEAD reports whether the cipher is a combined mode (RFC 5282): it
// protects integrity itself, so the proposal carries no INTEG transform.
func (id EncrID) IsAEAD() bool {
	switch id {
	case EncrAESCCM8, EncrAESCCM12, EncrAESCCM16, EncrAESGCM8, EncrAESGCM12, EncrAESGCM16,
		EncrNullAuthAESGMAC, EncrCamelliaCCM8, EncrCamelliaCCM12, EncrCamelliaCCM16,
		EncrChaCha20Poly1305, EncrAESCCM8IIV, EncrAESGCM16IIV, EncrChaCha20Poly1305IIV,
		32, 33, 34, 35:
		return true
	}
	return false
}

// PRFID is a Transform ID of transform type 2 (pseudorandom function).
type PRFID uint16

const (
	PRFHMACMD5      PRFID = 1
	PRFHMACSHA1     PRFID = 2
	PRFHMACTiger    PRFID = 3
	PRFAES128XCBC   PRFID = 4
	PRFHMACSHA2_256 PRFID = 5
	PRFHMACSHA2_384 PRFID = 6
	PRFHMACSHA2_512 PRFID = 7
	PRFAES128CMAC   PRFID = 8
)

var prfNames = map[PRFID]string{
	1: "PRF_HMAC_MD5",
	2: "PRF_HMAC_SHA1",
	3: "PRF_HMAC_TIGER",
	4: "PRF_AES128_XCBC",
	5: "PRF_HMAC_SHA2_256",
	6: "PRF_HMAC_SHA2_384",
	7: "PRF_HMAC_SHA2_512",
	8: "PRF_AES128_CMAC",
	9: "PRF_HMAC_STREEBOG_512",
}

func (id PRFID) String() string { return lookup(prfNames, id, "PRF") }

// IntegID is a Transform ID of transform type 3 (integrity algorithm).
type IntegID uint16

const (
	IntegNone            IntegID = 0
	IntegHMACMD5_96      IntegID = 1
	IntegHMACSHA1_96     IntegID = 2
	IntegDESMAC          IntegID = 3
	IntegKPDKMD5         IntegID = 4
	IntegAESXCBC96       IntegID = 5
	IntegHMACMD5_128     IntegID = 6
	IntegHMACSHA1_160    IntegID = 7
	IntegAESCMAC96       IntegID = 8
	IntegAES128GMAC      IntegID = 9
	IntegAES192GMAC      IntegID = 10
	IntegAES256GMAC      IntegID = 11
	IntegHMACSHA2_256128 IntegID = 12
	IntegHMACSHA2_384192 IntegID = 13
	IntegHMACSHA2_512256 IntegID = 14
)

var integNames = map[IntegID]string{
	0:  "NONE",
	1:  "AUTH_HMAC_MD5_96",
	2:  "AUTH_HMAC_SHA1_96",
	3:  "AUTH_DES_MAC",
	4:  "AUTH_KPDK_MD5",
	5:  "AUTH_AES_XCBC_96",
	6:  "AUTH_HMAC_MD5_128",
	7:  "AUTH_HMAC_SHA1_160",
	8:  "AUTH_AES_CMAC_96",
	9:  "AUTH_AES_128_GMAC",
	10: "AUTH_AES_192_GMAC",
	11: "AUTH_AES_256_GMAC",
	12: "AUTH_HMAC_SHA2_256_128",
	13: "AUTH_HMAC_SHA2_384_192",
	14: "AUTH_HMAC_SHA2_512_256",
}

func (id IntegID) String() string { return lookup(integNames, id, "INTEG") }

// DHGroup is a Transform ID of transform type 4, the Key Exchange Method
// (a Diffie-Hellman group before RFC 9370), as also carried in the KE
// payload and in INVALID_KE_PAYLOAD.
type DHGroup uint16

const (
	GroupNone       DHGroup = 0
	GroupMODP768    DHGroup = 1
	GroupMODP1024   DHGroup = 2
	GroupMODP1536   DHGroup = 5
	GroupMODP2048   DHGroup = 14
	GroupMODP3072   DHGroup = 15
	GroupMODP4096   DHGroup = 16
	GroupMODP6144   DHGroup = 17
	GroupMODP8192   DHGroup = 18
	GroupECP256     DHGroup = 19
	GroupECP384     DHGroup = 20
	GroupECP521     DHGroup = 21
	GroupMODP1024S  DHGroup = 22 // 1024-bit MODP with 160-bit prime order subgroup
	GroupMODP2048S  DHGroup = 23 // 2048-bit MODP with 224-bit prime order subgroup
	GroupMODP2048S2 DHGroup = 24 // 2048-bit MODP with 256-bit prime order subgroup
	GroupECP192     DHGroup = 25
	GroupECP224     DHGroup = 26
	GroupBrainpool  DHGroup = 27 // brainpoolP224r1; 28..30 are P256r1..P512r1
	GroupCurve25519 DHGroup = 31
	GroupCurve448   DHGroup = 32
	GroupMLKEM512   DHGroup = 35
	GroupMLKEM768   DHGroup = 36
	GroupMLKEM1024  DHGroup = 37
)

var dhNames = map[DHGroup]string{
	0:  "NONE",
	1:  "MODP_768",
	2:  "MODP_1024",
	5:  "MODP_1536",
	14: "MODP_2048",
	15: "MODP_3072",
	16: "MODP_4096",
	17: "MODP_6144",
	18: "MODP_8192",
	19: "ECP_256",
	20: "ECP_384",
	21: "ECP_521",
	22: "MODP_1024_160",
	23: "MODP_2048_224",
	24: "MODP_2048_256",
	25: "ECP_192",
	26: "ECP_224",
	27: "BRAINPOOL_P224R1",
	28: "BRAINPOOL_P256R1",
	29: "BRAINPOOL_P384R1",
	30: "BRAINPOOL_P512R1",
	31: "CURVE25519",
	32: "CURVE448",
	33: "GOST3410_2012_256",
	34: "GOST3410_2012_512",
	35: "ML_KEM_512",
	36: "ML_KEM_768",
	37: "ML_KEM_1024",
}

func (g DHGroup) String() string { return lookup(dhNames, g, "KE") }

// ESNID is a Transform ID of transform type 5.
type ESNID uint16

var esnNames = map[ESNID]string{0: "NO_ESN", 1: "ESN"}

func (id ESNID) String() string { return lookup(esnNames, id, "ESN") }

// AttributeType is a transform attribute type (RFC 7296 §3.3.5).
type AttributeType uint16

// AttrKeyLength is the only transform attribute IKEv2 defines.
const AttrKeyLength AttributeType = 14

var attributeNames = map[AttributeType]string{14: "Key Length"}

func (t AttributeType) String() string { return lookup(attributeNames, t, "ATTRIBUTE") }

// IDType is an Identification payload ID Type (RFC 7296 §3.5).
type IDType uint8

const (
	IDIPv4Addr   IDType = 1
	IDFQDN       IDType = 2
	IDRFC822Addr IDType = 3
	IDIPv6Addr   IDType = 5
	IDDERASN1DN  IDType = 9
	IDDERASN1GN  IDType = 10
	IDKeyID      IDType = 11
	IDFCName     IDType = 12
	IDNull       IDType = 13 // RFC 7619
)

var idTypeNames = map[IDType]string{
	1:  "ID_IPV4_ADDR",
	2:  "ID_FQDN",
	3:  "ID_RFC822_ADDR",
	5:  "ID_IPV6_ADDR",
	9:  "ID_DER_ASN1_DN",
	10: "ID_DER_ASN1_GN",
	11: "ID_KEY_ID",
	12: "ID_FC_NAME",
	13: "ID_NULL",
}

func (t IDType) String() string { return lookup(idTypeNames, t, "ID") }

// CertEncoding is a CERT / CERTREQ Cert Encoding (RFC 7296 §3.6).
type CertEncoding uint8

const (
	CertPKCS7             CertEncoding = 1
	CertPGP               CertEncoding = 2
	CertDNSSignedKey      CertEncoding = 3
	CertX509Signature     CertEncoding = 4
	CertKerberos          CertEncoding = 6
	CertCRL               CertEncoding = 7
	CertARL               CertEncoding = 8
	CertSPKI              CertEncoding = 9
	CertX509Attribute     CertEncoding = 10
	CertRawRSAKey         CertEncoding = 11
	CertHashURLX509       CertEncoding = 12
	CertHashURLX509Bundle CertEncoding = 13
	CertOCSPContent       CertEncoding = 14 // RFC 4806
	CertRawPublicKey      CertEncoding = 15 // RFC 7670
)

var certEncodingNames = map[CertEncoding]string{
	1:  "PKCS #7 wrapped X.509 certificate",
	2:  "PGP Certificate",
	3:  "DNS Signed Key",
	4:  "X.509 Certificate - Signature",
	6:  "Kerberos Token",
	7:  "Certificate Revocation List (CRL)",
	8:  "Authority Revocation List (ARL)",
	9:  "SPKI Certificate",
	10: "X.509 Certificate - Attribute",
	11: "Raw RSA Key",
	12: "Hash and URL of X.509 certificate",
	13: "Hash and URL of X.509 bundle",
	14: "OCSP Content",
	15: "Raw Public Key",
}

func (e CertEncoding) String() string { return lookup(certEncodingNames, e, "CERT") }

// AuthMethod is an AUTH payload Auth Method (RFC 7296 §3.8).
type AuthMethod uint8

const (
	AuthRSASignature     AuthMethod = 1
	AuthSharedKeyMIC     AuthMethod = 2
	AuthDSSSignature     AuthMethod = 3
	AuthECDSASHA256P256  AuthMethod = 9
	AuthECDSASHA384P384  AuthMethod = 10
	AuthECDSASHA512P521  AuthMethod = 11
	AuthGenericPassword  AuthMethod = 12 // RFC 6467
	AuthNULL             AuthMethod = 13 // RFC 7619
	AuthDigitalSignature AuthMethod = 14 // RFC 7427
)

var authMethodNames = map[AuthMethod]string{
	1:  "RSA Digital Signature",
	2:  "Shared Key Message Integrity Code",
	3:  "DSS Digital Signature",
	9:  "ECDSA with SHA-256 on the P-256 curve",
	10: "ECDSA with SHA-384 on the P-384 curve",
	11: "ECDSA with SHA-512 on the P-521 curve",
	12: "Generic Secure Password Authentication Method",
	13: "NULL Authentication",
	14: "Digital Signature",
}

func (m AuthMethod) String() string { return lookup(authMethodNames, m, "AUTH") }

// TSType is a Traffic Selector Type (RFC 7296 §3.13.1).
type TSType uint8

const (
	TSIPv4AddrRange TSType = 7
	TSIPv6AddrRange TSType = 8
	TSFCAddrRange   TSType = 9  // RFC 4595
	TSSecLabel      TSType = 10 // RFC 9478
)

var tsTypeNames = map[TSType]string{
	7:  "TS_IPV4_ADDR_RANGE",
	8:  "TS_IPV6_ADDR_RANGE",
	9:  "TS_FC_ADDR_RANGE",
	10: "TS_SECLABEL",
}

func (t TSType) String() string { return lookup(tsTypeNames, t, "TS") }

// CFGType is a Configuration payload CFG Type (RFC 7296 §3.15).
type CFGType uint8

const (
	CFGRequest CFGType = 1
	CFGReply   CFGType = 2
	CFGSet     CFGType = 3
	CFGAck     CFGType = 4
)

var cfgTypeNames = map[CFGType]string{
	1: "CFG_REQUEST",
	2: "CFG_REPLY",
	3: "CFG_SET",
	4: "CFG_ACK",
}

func (t CFGType) String() string { return lookup(cfgTypeNames, t, "CFG") }

// CPAttrType is a Configuration Attribute Type (RFC 7296 §3.15.1).
type CPAttrType uint16

const (
	CPInternalIP4Address CPAttrType = 1
	CPInternalIP4Netmask CPAttrType = 2
	CPInternalIP4DNS     CPAttrType = 3
	CPInternalIP4NBNS    CPAttrType = 4
	CPInternalIP4DHCP    CPAttrType = 6
	CPApplicationVersion CPAttrType = 7
	CPInternalIP6Address CPAttrType = 8
	CPInternalIP6DNS     CPAttrType = 10
	CPInternalIP6DHCP    CPAttrType = 12
	CPInternalIP4Subnet  CPAttrType = 13
	CPSupportedAttribute CPAttrType = 14
	CPInternalIP6Subnet  CPAttrType = 15
	CPInternalDNSDomain  CPAttrType = 25 // RFC 8598
)

var cpAttrNames = map[CPAttrType]string{
	1:  "INTERNAL_IP4_ADDRESS",
	2:  "INTERNAL_IP4_NETMASK",
	3:  "INTERNAL_IP4_DNS",
	4:  "INTERNAL_IP4_NBNS",
	5:  "INTERNAL_ADDRESS_EXPIRY",
	6:  "INTERNAL_IP4_DHCP",
	7:  "APPLICATION_VERSION",
	8:  "INTERNAL_IP6_ADDRESS",
	10: "INTERNAL_IP6_DNS",
	11: "INTERNAL_IP6_NBNS",
	12: "INTERNAL_IP6_DHCP",
	13: "INTERNAL_IP4_SUBNET",
	14: "SUPPORTED_ATTRIBUTES",
	15: "INTERNAL_IP6_SUBNET",
	16: "MIP6_HOME_PREFIX",
	17: "INTERNAL_IP6_LINK",
	18: "INTERNAL_IP6_PREFIX",
	19: "HOME_AGENT_ADDRESS",
	20: "P_CSCF_IP4_ADDRESS",
	21: "P_CSCF_IP6_ADDRESS",
	22: "FTT_KAT",
	23: "EXTERNAL_SOURCE_IP4_NAT_INFO",
	24: "TIMEOUT_PERIOD_FOR_LIVENESS_CHECK",
	25: "INTERNAL_DNS_DOMAIN",
	26: "INTERNAL_DNSSEC_TA",
	27: "ENCDNS_IP4",
	28: "ENCDNS_IP6",
	29: "ENCDNS_DIGEST_INFO",
}

func (t CPAttrType) String() string { return lookup(cpAttrNames, t, "CP_ATTR") }

// EAPCode is the Code of an EAP message (RFC 3748 §4, RFC 6696).
type EAPCode uint8

const (
	EAPRequest  EAPCode = 1
	EAPResponse EAPCode = 2
	EAPSuccess  EAPCode = 3
	EAPFailure  EAPCode = 4
	EAPInitiate EAPCode = 5
	EAPFinish   EAPCode = 6
)

var eapCodeNames = map[EAPCode]string{
	1: "Request",
	2: "Response",
	3: "Success",
	4: "Failure",
	5: "Initiate",
	6: "Finish",
}

func (c EAPCode) String() string { return lookup(eapCodeNames, c, "EAP_CODE") }

// EAPType is the Type of an EAP Request or Response (IANA "Extensible
// Authentication Protocol (EAP) Registry"); only common methods are named.
type EAPType uint8

var eapTypeNames = map[EAPType]string{
	1:  "Identity",
	2:  "Notification",
	3:  "Nak",
	4:  "MD5-Challenge",
	5:  "One-Time Password",
	6:  "Generic Token Card",
	13: "EAP-TLS",
	18: "EAP-SIM",
	21: "EAP-TTLS",
	23: "EAP-AKA",
	25: "PEAP",
	26: "EAP-MSCHAPv2",
	43: "EAP-FAST",
	49: "EAP-IKEv2",
	50: "EAP-AKA'",
	52: "EAP-pwd",
	55: "TEAP",
}

func (t EAPType) String() string { return lookup(eapTypeNames, t, "EAP_TYPE") }

// knownVendorIDs maps well-known Vendor ID payload contents (hex) to a
// name. Entries ending in '*' match as a prefix: those VIDs carry a version
// or flags after a fixed part.
var knownVendorIDs = []struct{ hex, name string }{
	{"882fe56d6fd20dbc2251613b2ebe5beb", "strongSwan"},
	{"4048b7d56ebce88525e7de7f00d6c2d3*", "Cisco Fragmentation"},
	{"1e2b516905991c7d7c96fcbfb587e461*", "MS NT5 ISAKMPOAKLEY"},
	{"fb1de3cdf341b7ea16b7e5be0855f120", "MS-Negotiation Discovery Capable"},
	{"26244d38eddb61b3172a36e3d0cfb819", "Microsoft Vid-Initial-Contact"},
	{"4a131c81070358455c5728f20e95452f", "RFC 3947 (NAT-T)"},
	{"afcad71368a1f1c96b8696fc77570100", "Dead Peer Detection"},
	{"12f5f28c457168a9702d9fe274cc0100", "Cisco Unity"},
	{"09002689dfd6b712", "XAUTH"},
	{"8299031757a36082c6a621de*", "FortiGate"},
}
