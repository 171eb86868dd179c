package samtemplate

import (
	"net/http"
	"regexp"
	"slices"
	"testing"

	h "github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/internal/deploycheck"
)

// withUploads is small() plus a Media function with the upload routes.
func withUploads() Input {
	in := small()
	in.Routes = append(in.Routes,
		h.Route{Method: http.MethodPost, Path: "/_matrix/media/v3/upload", Function: "Media"},
		h.Route{Method: http.MethodPut, Path: "/_matrix/media/v3/upload/{serverName}/{mediaId}", Function: "Media"},
		h.Route{Method: http.MethodPost, Path: "/_matrix/media/v1/create", Function: "Media"},
	)
	in.Dirs = append(in.Dirs, "media")
	in.Origins = []Origin{UploadOrigin}
	return in
}

// The upload routes are written in the API's DefinitionBody: to the Media
// function by default, to the upload origin's HTTP proxy when
// MediaUploadOrigin is set.
func TestUploadRoutesFollowTheOrigin(t *testing.T) {
	res, tm := generate(t, withUploads())
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
	if got := sortedKeys(events(tm, "Media")); !slices.Equal(got, []string{"PostMediaV1Create"}) {
		t.Errorf("Media events %v: the upload routes must not be events (SAM cannot make them conditional)", got)
	}
	routes := tm.DefinitionRoutes(APIID)
	if len(routes) != 2 {
		t.Fatalf("DefinitionBody routes %+v", routes)
	}
	const origin = "https://upload.example.org:8443"
	for _, o := range []string{"", origin} {
		params, err := tm.ParamValues(map[string]any{"ServerName": "example.org", UploadOrigin.Param: o})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			in, err := tm.ResolveIntegration(r.Integration, &deploycheck.Env{Params: params})
			if err != nil {
				t.Fatalf("%s %s: %v", r.Method, r.Path, err)
			}
			want := deploycheck.Integration{Type: "aws_proxy", Method: "POST", PayloadFormatVersion: "2.0", Function: "Media",
				URI: "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/getatt:Media.Arn/invocations"}
			if o != "" {
				want = deploycheck.Integration{Type: "http_proxy", Method: r.Method, PayloadFormatVersion: "1.0", URI: origin + r.Path}
			}
			if in != want {
				t.Errorf("origin %q, %s %s: %+v, want %+v", o, r.Method, r.Path, in, want)
			}
		}
	}
	// Path variables are declared; the proxy waits as long as API Gateway allows.
	put := deploycheck.Path(tm.Resources[APIID].Properties, "DefinitionBody", "paths", "/_matrix/media/v3/upload/{serverName}/{mediaId}", "put")
	if n := len(deploycheck.List(deploycheck.Path(put, "parameters"))); n != 2 {
		t.Errorf("PUT declares %d path parameters, want 2", n)
	}
	proxy := deploycheck.List(deploycheck.Path(put, "x-amazon-apigateway-integration", "Fn::If"))
	if len(proxy) != 3 || deploycheck.Path(proxy[1], "timeoutInMillis") != 30000 {
		t.Errorf("proxy integration %v", proxy)
	}

	// API Gateway may invoke Media for exactly these routes.
	arns := map[string]bool{}
	for _, p := range tm.ResourcesOfType("AWS::Lambda::Permission") {
		if !deploycheck.IsRef(p.Properties["FunctionName"], "Media") || p.Properties["Principal"] != "apigateway.amazonaws.com" || p.Properties["Action"] != "lambda:InvokeFunction" {
			t.Errorf("%s: %v", p.ID, p.Properties)
		}
		v, err := tm.Eval(p.Properties["SourceArn"], &deploycheck.Env{})
		if err != nil {
			t.Fatal(err)
		}
		arns[v.(string)] = true
	}
	for _, want := range []string{
		"arn:aws:execute-api:us-east-1:123456789012:ref:HttpApi/*/POST/_matrix/media/v3/upload",
		"arn:aws:execute-api:us-east-1:123456789012:ref:HttpApi/*/PUT/_matrix/media/v3/upload/*/*",
	} {
		if !arns[want] {
			t.Errorf("no permission for %s (have %v)", want, arns)
		}
	}
	if len(arns) != 2 {
		t.Errorf("permissions %v, want 2", arns)
	}

	// The function answering /config knows where uploads go.
	if v := deploycheck.Path(tm.Resources["Media"].Properties, "Environment", "Variables", UploadOrigin.Env); !deploycheck.IsRef(v, UploadOrigin.Param) {
		t.Errorf("Media's %s is %v, want !Ref %s", UploadOrigin.Env, v, UploadOrigin.Param)
	}
	if deploycheck.Path(tm.Resources["ClientB"].Properties, "Environment") != nil {
		t.Errorf("ClientB got an environment: %v", tm.Resources["ClientB"].Properties["Environment"])
	}
}

// The parameter's pattern takes what infra/config takes (an origin, no path).
func TestOriginPattern(t *testing.T) {
	re := regexp.MustCompile("^(?:" + OriginPattern + ")$")
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"", true},
		{"https://upload.example.org", true},
		{"https://upload.example.org:8443", true},
		{"http://10.0.0.5:8008", true},
		{"https://upload.example.org/", false},
		{"https://upload.example.org/media", false},
		{"upload.example.org", false},
		{"ftp://upload.example.org", false},
		{"https://upload.example.org?x=1", false},
	} {
		if re.MatchString(tc.v) != tc.ok {
			t.Errorf("%q: pattern says %v, want %v", tc.v, !tc.ok, tc.ok)
		}
	}
}

// Without the upload routes there is no parameter, condition or
// definition; with one missing from the route table, a problem.
func TestUploadRoutesAbsent(t *testing.T) {
	res, tm := generate(t, small())
	if _, ok := tm.Parameters[UploadOrigin.Param]; ok || len(res.Problems) > 0 {
		t.Errorf("a stack without upload routes: parameter %v, problems %v", tm.Parameters[UploadOrigin.Param], res.Problems)
	}
	if tm.Resources[APIID].Properties["DefinitionBody"] != nil || tm.Conditions[UploadOrigin.Condition] != nil {
		t.Errorf("a stack without upload routes has a DefinitionBody or condition")
	}
	in := small()
	in.Origins = []Origin{UploadOrigin}
	res, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(res, "MediaUploadOrigin route POST /_matrix/media/v3/upload (internal/samtemplate.Origins) is not in the route table") {
		t.Errorf("problems %v", res.Problems)
	}
}

// The bucket lets browsers use presigned URLs and expires what upload URLs
// left behind, under the prefix core/media writes to.
func TestBucketRules(t *testing.T) {
	_, tm := generate(t, withUploads())
	p := tm.Resources[BucketID].Properties
	rules := deploycheck.List(deploycheck.Path(p, "CorsConfiguration", "CorsRules"))
	if len(rules) != 1 {
		t.Fatalf("CORS rules %v", rules)
	}
	var methods []string
	for _, m := range deploycheck.List(deploycheck.Path(rules[0], "AllowedMethods")) {
		methods = append(methods, m.(string))
	}
	if !slices.Equal(methods, resources.MediaCORSMethods) || !slices.Contains(deploycheck.List(deploycheck.Path(rules[0], "AllowedHeaders")), any("*")) {
		t.Errorf("CORS rule %v", rules[0])
	}
	found := false
	for _, r := range deploycheck.List(deploycheck.Path(p, "LifecycleConfiguration", "Rules")) {
		if deploycheck.Path(r, "Prefix") == resources.MediaIncomingPrefix {
			found = deploycheck.Path(r, "ExpirationInDays") == resources.MediaIncomingExpiryDays && deploycheck.Path(r, "Status") == "Enabled"
		}
	}
	if !found {
		t.Errorf("no enabled rule expiring %s after %d day(s): %v", resources.MediaIncomingPrefix, resources.MediaIncomingExpiryDays, p["LifecycleConfiguration"])
	}
}

// The long-polls go to SyncOrigin's proxy when it is set, beside the upload
// routes and their own parameter; ClientSync gets no variable for it.
func TestSyncRoutesFollowTheirOrigin(t *testing.T) {
	in := withUploads()
	in.Routes = append(in.Routes,
		h.Route{Method: http.MethodGet, Path: "/_matrix/client/v3/sync", Function: "ClientSync"},
		h.Route{Method: http.MethodGet, Path: "/_matrix/client/v3/events", Function: "ClientSync"},
		h.Route{Method: http.MethodPost, Path: "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", Function: "ClientSync"},
		h.Route{Method: http.MethodGet, Path: "/_matrix/client/v3/sync/other", Function: "ClientSync"},
	)
	in.Dirs = append(in.Dirs, "client-sync")
	in.Origins = Origins
	res, tm := generate(t, in)
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
	for _, o := range Origins {
		if _, ok := tm.Parameters[o.Param]; !ok || tm.Conditions[o.Condition] == nil {
			t.Errorf("no parameter or condition for %s", o.Param)
		}
	}
	if got := sortedKeys(events(tm, "ClientSync")); len(got) != 1 {
		t.Errorf("ClientSync events %v: only the route no origin moves stays an event", got)
	}
	const origin = "https://sync.example.org"
	params, err := tm.ParamValues(map[string]any{"ServerName": "example.org", SyncOrigin.Param: origin})
	if err != nil {
		t.Fatal(err)
	}
	proxied := map[string]string{}
	for _, r := range tm.DefinitionRoutes(APIID) {
		in, err := tm.ResolveIntegration(r.Integration, &deploycheck.Env{Params: params})
		if err != nil {
			t.Fatalf("%s %s: %v", r.Method, r.Path, err)
		}
		proxied[r.Method+" "+r.Path] = in.Type + " " + in.URI + in.Function
	}
	want := map[string]string{
		"GET /_matrix/client/v3/sync":   "http_proxy " + origin + "/_matrix/client/v3/sync",
		"GET /_matrix/client/v3/events": "http_proxy " + origin + "/_matrix/client/v3/events",
		"POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync": "http_proxy " + origin +
			"/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
		// Only SyncOrigin is set: the uploads stay on Media.
		"POST /_matrix/media/v3/upload":                       "aws_proxy arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/getatt:Media.Arn/invocationsMedia",
		"PUT /_matrix/media/v3/upload/{serverName}/{mediaId}": "aws_proxy arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/getatt:Media.Arn/invocationsMedia",
	}
	for k, v := range want {
		if proxied[k] != v {
			t.Errorf("%s: %q, want %q", k, proxied[k], v)
		}
	}
	if len(proxied) != len(want) {
		t.Errorf("DefinitionBody routes %v", proxied)
	}
	if v := deploycheck.Path(tm.Resources["ClientSync"].Properties, "Environment"); v != nil {
		t.Errorf("ClientSync environment %v", v)
	}
}
