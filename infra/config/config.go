// Package config reads Cirrus's settings from environment variables (the
// README lists them). A bad or missing setting is an error naming it, so the
// process stops at start with one clear line.
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/clientapi"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/media"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/server"
)

// Storage engines.
const (
	StorageEmbedded = "embedded"
	StorageAWS      = "aws"
)

// Config is everything a process needs to start.
type Config struct {
	Server     server.Config
	ListenAddr string
	DataDir    string
	Storage    string
	LogLevel   string
	// AWS resources (Storage = aws).
	Table               string
	MediaBucket         string
	FederationQueueURL  string
	FanoutQueueURL      string
	AppServiceQueueURL  string
	CreateAWSResources  bool
	RegistrationWarning string
	// FederationListenAddr is the HTTPS listener of the all-in-one for
	// other servers ("" = none); its certificate comes from the files, or
	// is self-signed at start (federation.go).
	FederationListenAddr                string
	FederationTLSCert, FederationTLSKey string
	// FederationTLSCACert and FederationTLSCAKey name a CA from which the
	// listener's certificate is minted at start (and which outbound
	// federation trusts besides the system roots).
	FederationTLSCACert, FederationTLSCAKey string
	// FederationWarnings are logged loudly at start (test-only switches).
	FederationWarnings []string
	// RotateSigningKeyFrom (CIRRUS_SIGNING_KEY_ROTATE_FROM) is a signing key
	// id: a process that starts with that key as the current one replaces
	// it with a new key, keeping it in old_verify_keys. Set it to the
	// current key's id; later starts find another key and do nothing.
	RotateSigningKeyFrom string
	// Workers (CIRRUS_WORKERS, default on) runs the queue workers (fan-out,
	// federation and application service senders) in the all-in-one. Off,
	// it only serves HTTP: an origin beside a Lambda deployment, whose
	// worker functions consume the queues.
	Workers bool
}

// minSharedSecretLen is the shortest CIRRUS_REGISTRATION_SHARED_SECRET
// accepted: whoever knows it can create admin accounts.
const minSharedSecretLen = 16

// Getenv is how settings are read (os.Getenv; tests pass a map lookup).
type Getenv func(string) string

// Load reads the environment.
func Load(get Getenv) (*Config, error) {
	if get == nil {
		get = os.Getenv
	}
	c := &Config{
		ListenAddr:  or(get("CIRRUS_LISTEN_ADDR"), "127.0.0.1:8008"),
		DataDir:     or(get("CIRRUS_DATA_DIR"), "./data"),
		Storage:     or(get("CIRRUS_STORAGE"), StorageEmbedded),
		LogLevel:    or(get("CIRRUS_LOG_LEVEL"), "info"),
		Table:       or(get("CIRRUS_TABLE"), resources.Table.Name),
		MediaBucket: or(get("CIRRUS_MEDIA_BUCKET"), resources.MediaBucket),
	}
	c.FederationQueueURL = get("CIRRUS_FEDERATION_QUEUE_URL")
	c.FanoutQueueURL = get("CIRRUS_FANOUT_QUEUE_URL")

	name := get("CIRRUS_SERVER_NAME")
	if name == "" {
		return nil, fmt.Errorf("CIRRUS_SERVER_NAME is not set: give the server's Matrix name, e.g. example.org")
	}
	if !id.ValidateServerName(name) {
		return nil, fmt.Errorf("CIRRUS_SERVER_NAME=%q is not a valid server name", name)
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return nil, fmt.Errorf("CIRRUS_LISTEN_ADDR=%q is not host:port", c.ListenAddr)
	}
	if c.Storage != StorageEmbedded && c.Storage != StorageAWS {
		return nil, fmt.Errorf("CIRRUS_STORAGE=%q must be %q or %q", c.Storage, StorageEmbedded, StorageAWS)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("CIRRUS_LOG_LEVEL=%q must be debug, info, warn or error", c.LogLevel)
	}
	var err error
	if c.CreateAWSResources, err = boolVar(get, "CIRRUS_AWS_CREATE_RESOURCES", false); err != nil {
		return nil, err
	}
	if c.Storage == StorageAWS && !c.CreateAWSResources {
		if c.FederationQueueURL == "" {
			return nil, fmt.Errorf("CIRRUS_FEDERATION_QUEUE_URL is not set (needed with CIRRUS_STORAGE=aws)")
		}
		if c.FanoutQueueURL == "" {
			return nil, fmt.Errorf("CIRRUS_FANOUT_QUEUE_URL is not set (needed with CIRRUS_STORAGE=aws)")
		}
	}

	cc := clientapi.Config{
		ServerName:         name,
		PublicBaseURL:      strings.TrimRight(or(get("CIRRUS_PUBLIC_BASEURL"), "http://"+c.ListenAddr), "/"),
		WellKnownServer:    get("CIRRUS_WELLKNOWN_SERVER"),
		RegistrationTokens: splitList(get("CIRRUS_REGISTRATION_TOKENS")),
	}
	// Registration is open only when asked for explicitly.
	cc.Registration = get("CIRRUS_REGISTRATION")
	if cc.Registration == "" {
		cc.Registration = clientapi.RegistrationClosed
		if len(cc.RegistrationTokens) > 0 {
			cc.Registration = clientapi.RegistrationToken
		}
	}
	switch cc.Registration {
	case clientapi.RegistrationOpen:
		c.RegistrationWarning = "registration is OPEN: anyone who reaches this server can create an account"
	case clientapi.RegistrationClosed:
	case clientapi.RegistrationToken:
		if len(cc.RegistrationTokens) == 0 {
			return nil, fmt.Errorf("CIRRUS_REGISTRATION=token needs CIRRUS_REGISTRATION_TOKENS (comma-separated)")
		}
	default:
		return nil, fmt.Errorf("CIRRUS_REGISTRATION=%q must be open, token or closed", cc.Registration)
	}
	if cc.GuestAccess, err = boolVar(get, "CIRRUS_GUEST_ACCESS", false); err != nil {
		return nil, err
	}
	// The shared secret is never echoed in errors.
	cc.RegistrationSharedSecret = get("CIRRUS_REGISTRATION_SHARED_SECRET")
	if n := len(cc.RegistrationSharedSecret); n > 0 && n < minSharedSecretLen {
		return nil, fmt.Errorf("CIRRUS_REGISTRATION_SHARED_SECRET is %d characters; use at least %d (e.g. the output of: openssl rand -hex 32)", n, minSharedSecretLen)
	}
	if cc.RefreshTokenLifetime, err = durationVar(get, "CIRRUS_ACCESS_TOKEN_LIFETIME", time.Hour); err != nil {
		return nil, err
	}
	c.Server.Client = cc
	if c.Server.MaxBodyBytes, err = intVar(get, "CIRRUS_MAX_BODY_BYTES", 1<<20, 1024, 100<<20); err != nil {
		return nil, err
	}
	bc, err := intVar(get, "CIRRUS_BCRYPT_COST", 12, 4, 31)
	if err != nil {
		return nil, err
	}
	c.Server.BcryptCost = int(bc)
	if c.Workers, err = boolVar(get, "CIRRUS_WORKERS", true); err != nil {
		return nil, err
	}
	if !c.Workers && c.Storage != StorageAWS {
		return nil, fmt.Errorf("CIRRUS_WORKERS=false needs CIRRUS_STORAGE=aws (with the embedded store nothing else would run the workers)")
	}
	limits, err := boolVar(get, "CIRRUS_RATE_LIMITS", true)
	if err != nil {
		return nil, err
	}
	if limits {
		c.Server.Limits = map[string]httpapi.Rate{
			server.LimitRegister:   {PerSecond: 0.2, Burst: 10},
			server.LimitLogin:      {PerSecond: 0.5, Burst: 10},
			server.LimitSend:       {PerSecond: 10, Burst: 50},
			server.LimitJoin:       {PerSecond: 1, Burst: 20},
			server.LimitCreateRoom: {PerSecond: 0.2, Burst: 10},
			server.LimitMedia:      {PerSecond: 1, Burst: 30},
			server.LimitPreview:    {PerSecond: 0.5, Burst: 10},
		}
	}
	// Several Lambda instances each limiting on their own would allow N
	// times the rate: on AWS the counts live in the table by default.
	if c.Server.SharedLimits, err = boolVar(get, "CIRRUS_RATE_LIMITS_SHARED", c.Storage == StorageAWS); err != nil {
		return nil, err
	}
	if c.Server.PushAllowPrivate, err = boolVar(get, "CIRRUS_PUSH_ALLOW_PRIVATE", false); err != nil {
		return nil, err
	}
	if err := loadMedia(get, &c.Server.Media); err != nil {
		return nil, err
	}
	if err := loadFederation(get, c); err != nil {
		return nil, err
	}
	if err := loadSync(get, c); err != nil {
		return nil, err
	}
	if err := loadDiscovery(get, c); err != nil {
		return nil, err
	}
	if err := loadAppServices(get, c); err != nil {
		return nil, err
	}
	if err := loadSSO(get, c); err != nil { // sso.go
		return nil, err
	}
	return c, nil
}

// loadMedia reads the content repository's settings.
func loadMedia(get Getenv, m *media.Config) error {
	var err error
	if m.MaxUploadBytes, err = intVar(get, "CIRRUS_MAX_UPLOAD_BYTES", media.DefaultMaxUploadBytes, 1, 5<<30); err != nil {
		return err
	}
	if m.LegacyUnauthenticated, err = boolVar(get, "CIRRUS_MEDIA_LEGACY_UNAUTHENTICATED", false); err != nil {
		return err
	}
	if m.PreviewAllowPrivate, err = boolVar(get, "CIRRUS_URL_PREVIEW_ALLOW_PRIVATE", false); err != nil {
		return err
	}
	if m.RedirectAbove, err = intVar(get, "CIRRUS_MEDIA_REDIRECT_BYTES", media.DefaultRedirectAbove, 0, 5<<30); err != nil {
		return err
	}
	// In a Lambda function (the runtime sets AWS_LAMBDA_FUNCTION_NAME) no
	// request or answer can carry more than the invocation payload limit.
	direct := int64(0)
	if get("AWS_LAMBDA_FUNCTION_NAME") != "" {
		direct = media.LambdaPayloadLimit
	}
	if m.DirectLimit, err = intVar(get, "CIRRUS_MEDIA_DIRECT_LIMIT_BYTES", direct, 0, 5<<30); err != nil {
		return err
	}
	if m.MaxThumbnailPixels, err = intVar(get, "CIRRUS_THUMBNAIL_MAX_PIXELS", media.DefaultMaxThumbPixels, 1, 1<<31); err != nil {
		return err
	}
	// MSC3870 upload URLs: on by default where the transport limits uploads
	// (Lambda): they are the only way to upload more than it there.
	if m.UploadURLs, err = boolVar(get, "CIRRUS_MEDIA_UPLOAD_URLS", m.DirectLimit > 0); err != nil {
		return err
	}
	// The all-in-one that API Gateway proxies the upload routes to (the
	// template's MediaUploadOrigin): only its effect on /config matters here.
	m.UploadOrigin = strings.TrimSpace(get("CIRRUS_MEDIA_UPLOAD_ORIGIN"))
	if err := checkOrigin(m.UploadOrigin); err != nil {
		return fmt.Errorf("CIRRUS_MEDIA_UPLOAD_ORIGIN: %w", err)
	}
	return nil
}

// checkOrigin accepts "" or an origin: http(s)://host[:port], nothing after.
func checkOrigin(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#") {
		return fmt.Errorf("%q is not an origin like https://upload.example.org (scheme and host only, no path)", s)
	}
	return nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func boolVar(get Getenv, name string, def bool) (bool, error) {
	v := get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q must be true or false", name, v)
	}
	return b, nil
}

func intVar(get Getenv, name string, def, min, max int64) (int64, error) {
	v := get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("%s=%q must be an integer from %d to %d", name, v, min, max)
	}
	return n, nil
}

func durationVar(get Getenv, name string, def time.Duration) (time.Duration, error) {
	v := get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q must be a duration such as 1h or 30m", name, v)
	}
	return d, nil
}
