package ike

import "strconv"

// This file holds the numbers and names of the IANA "Internet Key Exchange
// Version 2 (IKEv2) Parameters" registry (and the few ISAKMP values an
// IKEv1 header can carry), as data, in one place. Values missing from a
// table print as NAME(number), e.g. NOTIFY(12345).

// Payload types (RFC 7296 §3.2 and later RFCs). PayloadNone, PayloadEncrypted
// and PayloadEncryptedFragment are in message.go.
const (
	PayloadSA       PayloadType = 33
	PayloadKE       PayloadType = 34
	PayloadIDi      PayloadType = 35
	PayloadIDr      PayloadType = 36
	PayloadCERT     PayloadType = 37
	PayloadCERTREQ  PayloadType = 38
	PayloadAUTH     PayloadType = 39
	PayloadNonce    PayloadType = 40 // Ni, Nr
	PayloadNotify   PayloadType = 41
	PayloadDelete   PayloadType = 42
	PayloadVendorID PayloadType = 43
	PayloadTSi      PayloadType = 44
	PayloadTSr      PayloadType = 45
	PayloadCP       PayloadType = 47
	PayloadEAP      PayloadType = 48
	PayloadGSPM     PayloadType = 49 // RFC 6467
	PayloadIDg      PayloadType = 50 // G-IKEv2
	PayloadGSA      PayloadType = 51 // G-IKEv2
	PayloadKD       PayloadType = 52 // G-IKEv2
	PayloadPS       PayloadType = 54 // Puzzle Solution, RFC 8019
)

// payloadNames are the abbreviations RFC 7296 uses in exchange diagrams.
// The Nonce is "Ni"/"Nr" there depending on the sender; one name is needed
// here, so it is spelled out.
var payloadNames = map[PayloadType]string{
	0:  "NONE",
	33: "SA",
	34: "KE",
	35: "IDi",
	36: "IDr",
	37: "CERT",
	38: "CERTREQ",
	39: "AUTH",
	40: "Nonce",
	41: "N",
	42: "D",
	43: "V",
	44: "TSi",
	45: "TSr",
	46: "SK",
	47: "CP",
	48: "EAP",
	49: "GSPM",
	50: "IDg",
	51: "GSA",
	52: "KD",
	53: "SKF",
	54: "PS",
}

// payloadFullNames are the registry's long names.
var payloadFullNames = map[PayloadType]string{
	0:  "No Next Payload",
	33: "Security Association",
	34: "Key Exchange",
	35: "Identification - Initiator",
	36: "Identification - Responder",
	37: "Certificate",
	38: "Certificate Request",
	39: "Authentication",
	40: "Nonce",
	41: "Notify",
	42: "Delete",
	43: "Vendor ID",
	44: "Traffic Selector - Initiator",
	45: "Traffic Selector - Responder",
	46: "Encrypted and Authenticated",
	47: "Configuration",
	48: "Extensible Authentication",
	49: "Generic Secure Password Methods",
	50: "Group Identification",
	51: "Group Security Association",
	52: "Key Download",
	53: "Encrypted and Authenticated Fragment",
	54: "Puzzle Solution",
}

// String returns the payload type's abbreviation (SA, KE, N, SKF, ...).
func (t PayloadType) String() string { return lookup(payloadNames, t, "PAYLOAD") }

// FullName returns the registry's name of the payload type.
func (t PayloadType) FullName() string { return lookup(payloadFullNames, t, "PAYLOAD") }

// IKEv2 exchange types (RFC 7296 §3.1 and later RFCs).
const (
	ExchangeIKESAInit        ExchangeType = 34
	ExchangeIKEAuth          ExchangeType = 35
	ExchangeCreateChildSA    ExchangeType = 36
	ExchangeInformational    ExchangeType = 37
	ExchangeIKESessionResume ExchangeType = 38 // RFC 5723
	ExchangeIKEIntermediate  ExchangeType = 43 // RFC 9242
	ExchangeIKEFollowupKE    ExchangeType = 44 // RFC 9370
)

// ISAKMP exchange types an IKEv1 header carries in the same byte (RFC 2408
// §3.1, RFC 2409).
const (
	ExchangeV1Base               ExchangeType = 1
	ExchangeV1IdentityProtection ExchangeType = 2 // Main Mode
	ExchangeV1AuthenticationOnly ExchangeType = 3
	ExchangeV1Aggressive         ExchangeType = 4
	ExchangeV1Informational      ExchangeType = 5
	ExchangeV1Transaction        ExchangeType = 6 // Mode Config
	ExchangeV1QuickMode          ExchangeType = 32
	ExchangeV1NewGroupMode       ExchangeType = 33
)

var exchangeNames = map[ExchangeType]string{
	34: "IKE_SA_INIT",
	35: "IKE_AUTH",
	36: "CREATE_CHILD_SA",
	37: "INFORMATIONAL",
	38: "IKE_SESSION_RESUME",
	39: "GSA_AUTH",
	40: "GSA_REGISTRATION",
	41: "GSA_REKEY",
	42: "GSA_INBAND_REKEY",
	43: "IKE_INTERMEDIATE",
	44: "IKE_FOLLOWUP_KE",
}

var exchangeV1Names = map[ExchangeType]string{
	0:  "NONE",
	1:  "Base",
	2:  "Identity Protection (Main Mode)",
	3:  "Authentication Only",
	4:  "Aggressive",
	5:  "Informational",
	6:  "Transaction (Mode Config)",
	32: "Quick Mode",
	33: "New Group Mode",
}

// String returns the IKEv2 name of the exchange type.
func (e ExchangeType) String() string { return lookup(exchangeNames, e, "EXCHANGE") }

// IKEv1String returns the ISAKMP/IKEv1 name of the exchange type, for the
// same byte in an IKEv1 header.
func (e ExchangeType) IKEv1String() string { return lookup(exchangeV1Names, e, "EXCHANGE") }

// ExchangeName names the header's exchange type in the header's own
// version: IKEv1 and IKEv2 give different meanings to the same numbers.
func ExchangeName(h Header) string {
	if h.MajorVersion == 1 {
		return h.Exchange.IKEv1String()
	}
	return h.Exchange.String()
}

// NotifyType is a Notify Message Type (RFC 7296 §3.10.1). Values below
// 16384 are errors, 16384 and above are status types.
type NotifyType uint16

// Notify message types the product looks at. Every registered value has a
// name in notifyNames.
const (
	NotifyUnsupportedCriticalPayload    NotifyType = 1
	NotifyInvalidIKESPI                 NotifyType = 4
	NotifyInvalidMajorVersion           NotifyType = 5
	NotifyInvalidSyntax                 NotifyType = 7
	NotifyInvalidMessageID              NotifyType = 9
	NotifyInvalidSPI                    NotifyType = 11
	NotifyNoProposalChosen              NotifyType = 14
	NotifyInvalidKEPayload              NotifyType = 17
	NotifyAuthenticationFailed          NotifyType = 24
	NotifySinglePairRequired            NotifyType = 34
	NotifyNoAdditionalSAs               NotifyType = 35
	NotifyInternalAddressFailure        NotifyType = 36
	NotifyFailedCPRequired              NotifyType = 37
	NotifyTSUnacceptable                NotifyType = 38
	NotifyInvalidSelectors              NotifyType = 39
	NotifyTemporaryFailure              NotifyType = 43
	NotifyChildSANotFound               NotifyType = 44
	NotifyInitialContact                NotifyType = 16384
	NotifySetWindowSize                 NotifyType = 16385
	NotifyNATDetectionSourceIP          NotifyType = 16388
	NotifyNATDetectionDestinationIP     NotifyType = 16389
	NotifyCookie                        NotifyType = 16390
	NotifyUseTransportMode              NotifyType = 16391
	NotifyRekeySA                       NotifyType = 16393
	NotifyMOBIKESupported               NotifyType = 16396
	NotifyMultipleAuthSupported         NotifyType = 16404
	NotifyAnotherAuthFollows            NotifyType = 16405
	NotifyRedirectSupported             NotifyType = 16406
	NotifyRedirect                      NotifyType = 16407
	NotifyRedirectedFrom                NotifyType = 16408
	NotifyEAPOnlyAuthentication         NotifyType = 16417
	NotifyChildlessIKEv2Supported       NotifyType = 16418
	NotifyIKEv2FragmentationSupported   NotifyType = 16430
	NotifySignatureHashAlgorithms       NotifyType = 16431
	NotifyIntermediateExchangeSupported NotifyType = 16438
	NotifyAdditionalKeyExchange         NotifyType = 16441
	NotifyUseAggfrag                    NotifyType = 16442
)

// notifyStatusBase is the first status (non-error) notify type.
const notifyStatusBase NotifyType = 16384

var notifyNames = map[NotifyType]string{
	1:  "UNSUPPORTED_CRITICAL_PAYLOAD",
	4:  "INVALID_IKE_SPI",
	5:  "INVALID_MAJOR_VERSION",
	7:  "INVALID_SYNTAX",
	9:  "INVALID_MESSAGE_ID",
	11: "INVALID_SPI",
	14: "NO_PROPOSAL_CHOSEN",
	17: "INVALID_KE_PAYLOAD",
	24: "AUTHENTICATION_FAILED",
	34: "SINGLE_PAIR_REQUIRED",
	35: "NO_ADDITIONAL_SAS",
	36: "INTERNAL_ADDRESS_FAILURE",
	37: "FAILED_CP_REQUIRED",
	38: "TS_UNACCEPTABLE",
	39: "INVALID_SELECTORS",
	40: "UNACCEPTABLE_ADDRESSES",
	41: "UNEXPECTED_NAT_DETECTED",
	42: "USE_ASSIGNED_HoA",
	43: "TEMPORARY_FAILURE",
	44: "CHILD_SA_NOT_FOUND",
	45: "INVALID_GROUP_ID",
	46: "AUTHORIZATION_FAILED",
	47: "STATE_NOT_FOUND",
	48: "TS_MAX_QUEUE",
	49: "REGISTRATION_FAILED",

	16384: "INITIAL_CONTACT",
	16385: "SET_WINDOW_SIZE",
	16386: "ADDITIONAL_TS_POSSIBLE",
	16387: "IPCOMP_SUPPORTED",
	16388: "NAT_DETECTION_SOURCE_IP",
	16389: "NAT_DETECTION_DESTINATION_IP",
	16390: "COOKIE",
	16391: "USE_TRANSPORT_MODE",
	16392: "HTTP_CERT_LOOKUP_SUPPORTED",
	16393: "REKEY_SA",
	16394: "ESP_TFC_PADDING_NOT_SUPPORTED",
	16395: "NON_FIRST_FRAGMENTS_ALSO",
	16396: "MOBIKE_SUPPORTED",
	16397: "ADDITIONAL_IP4_ADDRESS",
	16398: "ADDITIONAL_IP6_ADDRESS",
	16399: "NO_ADDITIONAL_ADDRESSES",
	16400: "UPDATE_SA_ADDRESSES",
	16401: "COOKIE2",
	16402: "NO_NATS_ALLOWED",
	16403: "AUTH_LIFETIME",
	16404: "MULTIPLE_AUTH_SUPPORTED",
	16405: "ANOTHER_AUTH_FOLLOWS",
	16406: "REDIRECT_SUPPORTED",
	16407: "REDIRECT",
	16408: "REDIRECTED_FROM",
	16409: "TICKET_LT_OPAQUE",
	16410: "TICKET_REQUEST",
	16411: "TICKET_ACK",
	16412: "TICKET_NACK",
	16413: "TICKET_OPAQUE",
	16414: "LINK_ID",
	16415: "USE_WESP_MODE",
	16416: "ROHC_SUPPORTED",
	16417: "EAP_ONLY_AUTHENTICATION",
	16418: "CHILDLESS_IKEV2_SUPPORTED",
	16419: "QUICK_CRASH_DETECTION",
	16420: "IKEV2_MESSAGE_ID_SYNC_SUPPORTED",
	16421: "IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED",
	16422: "IKEV2_MESSAGE_ID_SYNC",
	16423: "IPSEC_REPLAY_COUNTER_SYNC",
	16424: "SECURE_PASSWORD_METHODS",
	16425: "PSK_PERSIST",
	16426: "PSK_CONFIRM",
	16427: "ERX_SUPPORTED",
	16428: "IFOM_CAPABILITY",
	16429: "GROUP_SENDER",
	16430: "IKEV2_FRAGMENTATION_SUPPORTED",
	16431: "SIGNATURE_HASH_ALGORITHMS",
	16432: "CLONE_IKE_SA_SUPPORTED",
	16433: "CLONE_IKE_SA",
	16434: "PUZZLE",
	16435: "USE_PPK",
	16436: "PPK_IDENTITY",
	16437: "NO_PPK_AUTH",
	16438: "INTERMEDIATE_EXCHANGE_SUPPORTED",
	16439: "IP4_ALLOWED",
	16440: "IP6_ALLOWED",
	16441: "ADDITIONAL_KEY_EXCHANGE",
	16442: "USE_AGGFRAG",
	16443: "SUPPORTED_AUTH_METHODS",
	16444: "SA_RESOURCE_INFO",
	16445: "USE_PPK_INT",
	16446: "PPK_IDENTITY_KEY",
	16447: "IKE_SA_INIT_FULL_TRANSCRIPT_AUTH",
}

// String returns the registry name of the notify type.
func (t NotifyType) String() string { return lookup(notifyNames, t, "NOTIFY") }

// IsError reports whether t is an error type (below 16384, RFC 7296 §3.10.1).
func (t NotifyType) IsError() bool { return t < notifyStatusBase }

// lookup formats v by its table entry, or as PREFIX(v) when unregistered.
func lookup[K ~uint8 | ~uint16](m map[K]string, v K, prefix string) string {
	if s, ok := m[v]; ok {
		return s
	}
	return prefix + "(" + strconv.Itoa(int(v)) + ")"
}
