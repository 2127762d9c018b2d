package tooken

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
)

// Custody of stored secrets: a secret that Vault stores for Tooken (the
// root's, later a static role's) is only ever sent to the destination it was
// stored for. After the first rotation nobody but Vault knows the root
// secret, so a config write that points the engine elsewhere (another url,
// another CA that could vouch for an impostor of the same host) must carry a
// secret again: otherwise the stored one would be sent there, by the
// verification of the write or by the next creds read.

// secretDestination is where a stored secret may be sent: the normalised
// Tooken base URL and the fingerprint of the CA certificates that
// authenticate it ("" = the system roots). It holds no secret and may be
// stored beside the secret it guards.
type secretDestination struct {
	URL      string `json:"url"`
	CASHA256 string `json:"ca_sha256,omitempty"`
}

// destinationOf is the destination of a base URL and a PEM CA bundle, as a
// config stores them.
func destinationOf(baseURL, caPEM string) secretDestination {
	d := secretDestination{URL: normalizeBaseURL(baseURL)}
	if pem := strings.TrimSpace(caPEM); pem != "" {
		sum := sha256.Sum256([]byte(pem))
		d.CASHA256 = hex.EncodeToString(sum[:])
	}
	return d
}

// sameAs tells whether a secret stored for d may be sent to o.
func (d secretDestination) sameAs(o secretDestination) bool { return d == o }

// normalizeBaseURL is raw in the form two spellings of the same base URL
// share: scheme and host in lower case, no default port, no trailing slash.
// What does not parse is kept (trimmed) as it is: it cannot match another
// URL by accident.
func normalizeBaseURL(raw string) string {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host + strings.TrimRight(u.EscapedPath(), "/")
}

// errSecretForNewDestination is a write that changes where the stored root
// secret would be sent without giving a secret for the new destination.
var errSecretForNewDestination = errors.New("token: required when url or ca_cert changes: the stored root secret is only sent to the URL it was stored for")

// checkSecretDestination is the custody rule of a write: a secret stored
// for stored may go to next only when they are the same destination, or
// when the write gives a secret (secretGiven) for next.
func checkSecretDestination(stored, next secretDestination, secretGiven bool) error {
	if secretGiven || stored.sameAs(next) {
		return nil
	}
	return errSecretForNewDestination
}
