package deploycheck

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

var (
	varName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	literalPart = regexp.MustCompile(`^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$`)
)

// APIGatewayPath converts the path of a net/http ServeMux pattern to API
// Gateway (HTTP API) route syntax: literal segments stay, {name} stays,
// {name...} (the rest of the path) becomes {name+}. What API Gateway cannot
// express (a {$} anchor other than the root, wildcards inside a segment, a
// host) is an error.
func APIGatewayPath(muxPath string) (string, error) {
	if muxPath == "/{$}" {
		return "/", nil
	}
	if !strings.HasPrefix(muxPath, "/") {
		return "", fmt.Errorf("%q does not start with /: host patterns cannot be routed by API Gateway", muxPath)
	}
	if muxPath == "/" {
		return "", fmt.Errorf(`"/" matches every path in a ServeMux; API Gateway needs explicit routes or $default`)
	}
	segs := strings.Split(muxPath[1:], "/")
	out := make([]string, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch {
		case s == "":
			if last {
				return "", fmt.Errorf("%q ends in /, which matches a whole subtree in a ServeMux but one path in API Gateway", muxPath)
			}
			return "", fmt.Errorf("%q has an empty segment", muxPath)
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			name := s[1 : len(s)-1]
			switch {
			case name == "$":
				return "", fmt.Errorf("%q: API Gateway has no equivalent of {$}", muxPath)
			case strings.HasSuffix(name, "..."):
				if !last {
					return "", fmt.Errorf("%q: {name...} must be the last segment", muxPath)
				}
				name = strings.TrimSuffix(name, "...")
				if !varName.MatchString(name) {
					return "", fmt.Errorf("%q: bad wildcard name %q", muxPath, name)
				}
				out[i] = "{" + name + "+}"
			default:
				if !varName.MatchString(name) {
					return "", fmt.Errorf("%q: bad wildcard name %q", muxPath, name)
				}
				out[i] = "{" + name + "}"
			}
		case strings.ContainsAny(s, "{}"):
			return "", fmt.Errorf("%q: a wildcard must be a whole segment", muxPath)
		case !literalPart.MatchString(s):
			return "", fmt.Errorf("%q: segment %q has characters API Gateway routes cannot hold", muxPath, s)
		default:
			out[i] = s
		}
	}
	return "/" + strings.Join(out, "/"), nil
}

// VariableConflicts finds API Gateway paths that put differently named
// variables at the same place under the same parent (/rooms/{roomId}/a and
// /rooms/{id}/b): API Gateway refuses the second route with a
// ConflictException, while a ServeMux accepts both.
func VariableConflicts(paths []string) []string {
	type node struct {
		names map[string][]string // variable name → example paths
		kids  map[string]*node
	}
	newNode := func() *node { return &node{names: map[string][]string{}, kids: map[string]*node{}} }
	root := newNode()
	for _, p := range paths {
		n := root
		for _, s := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			key := s
			if strings.HasPrefix(s, "{") {
				name := strings.TrimSuffix(strings.Trim(s, "{}"), "+")
				n.names[name] = append(n.names[name], p)
				key = "{}"
			}
			k, ok := n.kids[key]
			if !ok {
				k = newNode()
				n.kids[key] = k
			}
			n = k
		}
	}
	var out []string
	var walk func(n *node)
	walk = func(n *node) {
		if len(n.names) > 1 {
			var parts []string
			for name, ex := range n.names {
				parts = append(parts, fmt.Sprintf("{%s} in %s", name, ex[0]))
			}
			sort.Strings(parts)
			out = append(out, "differently named variables at the same level: "+strings.Join(parts, "; ")+" (API Gateway refuses this; use one name)")
		}
		keys := make([]string, 0, len(n.kids))
		for k := range n.kids {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			walk(n.kids[k])
		}
	}
	walk(root)
	return out
}

// Kebab turns a CamelCase logical name into the kebab-case directory name
// under functions/: ClientDiscovery → client-discovery, FederationAPI →
// federation-api.
func Kebab(name string) string {
	rs := []rune(name)
	var b strings.Builder
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 {
			prev := rs[i-1]
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				b.WriteByte('-')
			}
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// Camel is the inverse build.mk applies: each dash-separated word gets its
// first letter upper-cased (client-discovery → ClientDiscovery).
func Camel(kebab string) string {
	var b strings.Builder
	for _, w := range strings.Split(kebab, "-") {
		if w == "" {
			continue
		}
		rs := []rune(w)
		rs[0] = unicode.ToUpper(rs[0])
		b.WriteString(string(rs))
	}
	return b.String()
}

// EventName is the logical id of the event serving method and path (the
// generator of template.yaml, internal/samtemplate, names events with it):
// GET /_matrix/client/v3/login → GetClientV3Login.
func EventName(method, path string) string {
	var b strings.Builder
	b.WriteString(Camel(strings.ToLower(method)))
	for i, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		if i == 0 && seg == "_matrix" {
			continue
		}
		seg = strings.Trim(seg, "{}+.")
		words := strings.FieldsFunc(seg, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
		for _, w := range words {
			rs := []rune(w)
			rs[0] = unicode.ToUpper(rs[0])
			b.WriteString(string(rs))
		}
	}
	return b.String()
}

// QueueEnvVar is the variable infra/config reads a queue's URL from, by the
// naming convention it follows: cirrus-federation.fifo →
// CIRRUS_FEDERATION_QUEUE_URL. template_test.go checks the convention
// against infra/config.
func QueueEnvVar(queueName string) string {
	base := strings.TrimSuffix(queueName, ".fifo")
	base = strings.TrimPrefix(base, "cirrus-")
	return "CIRRUS_" + strings.ToUpper(strings.ReplaceAll(base, "-", "_")) + "_QUEUE_URL"
}
