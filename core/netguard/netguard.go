// Package netguard keeps the server's outbound HTTP requests made on a
// user's behalf (URL previews, push gateways) away from internal networks:
// every address is checked at dial time, after DNS and after redirects.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrBlockedAddress is returned when a request would connect to an
// address the guard refuses.
var ErrBlockedAddress = errors.New("netguard: address not allowed")

// blockedPrefixes are ranges outside the public internet that the
// standard library's predicates do not already cover.
var blockedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",          // "this network"
		"100.64.0.0/10",      // carrier-grade NAT (also Alibaba's metadata 100.100.100.200)
		"192.0.0.0/24",       // IETF protocol assignments (Oracle's metadata 192.0.0.192)
		"192.0.2.0/24",       // documentation
		"198.18.0.0/15",      // benchmarking
		"198.51.100.0/24",    // documentation
		"203.0.113.0/24",     // documentation
		"240.0.0.0/4",        // reserved, and broadcast
		"64:ff9b::/96",       // NAT64: would reach any IPv4 address, private ones included
		"64:ff9b:1::/48",     // local-use NAT64
		"100::/64",           // discard
		"2001::/32",          // Teredo
		"2001:db8::/32",      // documentation
		"2002::/16",          // 6to4: embeds an IPv4 address
		"fec0::/10",          // deprecated site-local
		"fd00:ec2::254/128",  // AWS instance metadata over IPv6 (inside fc00::/7 too)
		"169.254.169.254/32", // cloud instance metadata (inside link-local too)
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// PublicAddress reports whether ip is a public unicast address the server
// may connect to on a user's behalf: not loopback, private, link-local, multicast,
// unspecified, cloud metadata or otherwise reserved.
func PublicAddress(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || !ip.IsGlobalUnicast() || ip.IsPrivate() || ip.IsLoopback() ||
		ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// guardedDialer returns a dialer that checks every address it is about to
// connect to, after DNS resolution: names resolving to a refused address,
// and redirects to one, fail at the dial, so no request ever leaves for them.
func guardedDialer(allow func(netip.Addr) bool) *net.Dialer {
	return &net.Dialer{
		Timeout:   5 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			if network != "tcp4" && network != "tcp6" {
				return fmt.Errorf("%w: network %s", ErrBlockedAddress, network)
			}
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrBlockedAddress, address)
			}
			ip, err := netip.ParseAddr(host)
			if err != nil || !allow(ip) {
				return fmt.Errorf("%w: %s", ErrBlockedAddress, host)
			}
			return nil
		},
	}
}

// maxRedirects is how many redirects a guarded client follows.
const maxRedirects = 5

// NewClient is an HTTP client with guarded dials (allow decides which
// addresses; PublicAddress normally), no
// proxy from the environment (it would bypass the guard), http and https
// only, a few redirects, bounded time.
func NewClient(allow func(netip.Addr) bool) *http.Client {
	d := guardedDialer(allow)
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  8 * time.Second,
		MaxIdleConns:           10,
		IdleConnTimeout:        30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   15 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %q URL", req.URL.Scheme)
			}
			return nil
		},
	}
}

// Blocked reports whether err comes from the guard.
func Blocked(err error) bool { return errors.Is(err, ErrBlockedAddress) }
