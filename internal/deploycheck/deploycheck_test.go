package deploycheck

import (
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, y string) *Template {
	t.Helper()
	tm, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestParseShortForms(t *testing.T) {
	tm := mustParse(t, `
Resources:
  A:
    Type: AWS::SQS::Queue
    Properties:
      X: !Ref B
      Y: !GetAtt B.Arn
      Z: !Sub ["${V}", {V: !Ref AWS::Region}]
      W: !If [C, !Ref AWS::NoValue, !Join [",", [a, b]]]
`)
	p := tm.Resources["A"].Properties
	want := map[string]any{
		"X": map[string]any{"Ref": "B"},
		"Y": map[string]any{"Fn::GetAtt": []any{"B", "Arn"}},
		"Z": map[string]any{"Fn::Sub": []any{"${V}", map[string]any{"V": map[string]any{"Ref": "AWS::Region"}}}},
		"W": map[string]any{"Fn::If": []any{"C", map[string]any{"Ref": "AWS::NoValue"}, map[string]any{"Fn::Join": []any{",", []any{"a", "b"}}}}},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got %#v\nwant %#v", p, want)
	}
}

func TestParseRejects(t *testing.T) {
	for _, y := range []string{
		"Resources:\n  A: {Type: X}\n  A: {Type: Y}\n", // duplicate key
		"Resources:\n  A: !Bogus x\n",                  // unknown tag
		"Resources:\n  A: {Type: X, Properties: {P: !GetAtt NoDot}}\n",
	} {
		if _, err := Parse([]byte(y)); err == nil {
			t.Errorf("Parse accepted %q", y)
		}
	}
}

func TestEval(t *testing.T) {
	tm := mustParse(t, `
Parameters:
  Name: {Type: String}
  Mode: {Type: String, Default: a}
Conditions:
  IsA: !Equals [!Ref Mode, a]
  NotA: !Not [!Condition IsA]
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      Vars:
        S: !Sub "https://${Name}.${AWS::Region}/${Q.Arn}/${!Literal}"
        I: !If [IsA, yes, no]
        N: !If [NotA, x, !Ref AWS::NoValue]
        L: [one, !Ref AWS::NoValue, !Select [1, !Split [",", "p,q"]]]
        R: !Ref Q
`)
	params, err := tm.ParamValues(map[string]any{"Name": "host"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := tm.Eval(tm.Resources["Q"].Properties["Vars"], &Env{Params: params})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"S": "https://host.us-east-1/getatt:Q.Arn/${Literal}",
		"I": "yes",
		"L": []any{"one", "q"},
		"R": "ref:Q",
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v\nwant %#v", v, want)
	}
	if _, err := tm.ParamValues(nil); err == nil {
		t.Errorf("ParamValues without Name should fail")
	}
}

func problems(ps []Problem) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, "\n")
}

func TestCheckRefs(t *testing.T) {
	tm := mustParse(t, `
Parameters:
  P: {Type: String, Default: x}
Conditions:
  C: !Equals [!Ref Q, x]
Resources:
  Q:
    Type: AWS::SQS::Queue
    Condition: Missing
    DependsOn: [Nope]
    Properties:
      A: !Ref P
      B: !Ref Gone
      C: !GetAtt Q.Bogus
      D: !Sub "${Q.Arn} ${Undefined} ${AWS::Region} ${!Skip}"
      E: !If [NoSuchCondition, a, b]
      F: !Ref FnRole
  Fn:
    Type: AWS::Serverless::Function
    Properties: {}
Outputs:
  O:
    Value: !GetAtt Missing2.Arn
`)
	got := problems(tm.CheckRefs())
	for _, want := range []string{
		`"Q" is not a parameter or pseudo parameter`,
		`"Gone" is not a parameter, resource or pseudo parameter`,
		`has no attribute "Bogus"`,
		`"Undefined" is not a parameter`,
		`condition "NoSuchCondition" is not defined`,
		`condition "Missing" is not defined`,
		`Nope is not a resource`,
		`Fn::GetAtt names "Missing2"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing problem %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "FnRole") || strings.Contains(got, "AWS::Region") || strings.Contains(got, "Skip") {
		t.Errorf("false positive in:\n%s", got)
	}
}

func TestCycles(t *testing.T) {
	base := `
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Environment:
      Variables:
        URL: %s
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        E:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: GET, Path: /x}
`
	ok := mustParse(t, strings.Replace(base, "%s", "plain", 1))
	if c := ok.Cycles(); len(c) != 0 {
		t.Errorf("unexpected cycles %v", c)
	}
	bad := mustParse(t, strings.Replace(base, "%s", `!Sub "https://${Api}.example"`, 1))
	if c := bad.Cycles(); len(c) != 1 || !reflect.DeepEqual(c[0], []string{"Api", "Fn"}) {
		t.Errorf("cycles %v, want [[Api Fn]]", c)
	}
}

func TestLint(t *testing.T) {
	tm := mustParse(t, `
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Unused: {Type: String, Default: x}
  Bad: {Type: String, Default: z, AllowedValues: [x, y]}
  Secret: {Type: String, NoEcho: true, Default: ""}
Conditions:
  Never: !Equals [!Ref Bad, x]
Resources:
  T:
    Type: AWS::DynamoDB::Table
    Properties:
      Arn: "arn:aws:dynamodb:::table/x"
  Fn:
    Type: AWS::Serverless::Function
    Properties: {}
Outputs:
  Leak:
    Value: !Ref Secret
`)
	got := problems(tm.Lint())
	for _, want := range []string{
		"Parameters.Unused: declared but never used",
		"Default z is not one of AllowedValues",
		"Conditions.Never: declared but never used",
		"hard-coded partition",
		"set DeletionPolicy and UpdateReplacePolicy",
		"shows the NoEcho parameter Secret",
		"no AWS::Serverless-2016-10-31 transform",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing problem %q in:\n%s", want, got)
		}
	}
}

func TestEstimatedResourceCount(t *testing.T) {
	tm := mustParse(t, `
Transform: AWS::Serverless-2016-10-31
Resources:
  Api: {Type: AWS::Serverless::HttpApi}
  WithDefault:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        D: {Type: HttpApi, Properties: {ApiId: !Ref Api}}
        A: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: /a}}
  Plain:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        A: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: /b}}
        B: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: /c}}
        Q: {Type: SQS, Properties: {Queue: x}}
`)
	// Api + stage; WithDefault + role + 1 permission; Plain + role + 2 permissions + 1 mapping.
	if n := tm.EstimatedResourceCount(); n != 2+3+5 {
		t.Errorf("estimated %d resources, want 10", n)
	}
}

func TestAPIGatewayPath(t *testing.T) {
	for in, want := range map[string]string{
		"/_matrix/client/versions":                                 "/_matrix/client/versions",
		"/_matrix/client/v3/rooms/{roomId}/send/{type}/{txnId}":    "/_matrix/client/v3/rooms/{roomId}/send/{type}/{txnId}",
		"/_matrix/media/v3/download/{serverName}/{mediaId}/{f...}": "/_matrix/media/v3/download/{serverName}/{mediaId}/{f+}",
		"/.well-known/matrix/client":                               "/.well-known/matrix/client",
		"/{$}":                                                     "/",
	} {
		got, err := APIGatewayPath(in)
		if err != nil || got != want {
			t.Errorf("APIGatewayPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/a/{x...}/b", "/a/", "/a//b", "/a/b{x}", "example.org/a", "/", "/a/{$}", "/a/{bad-name}"} {
		if got, err := APIGatewayPath(bad); err == nil {
			t.Errorf("APIGatewayPath(%q) = %q, want an error", bad, got)
		}
	}
}

func TestVariableConflicts(t *testing.T) {
	if c := VariableConflicts([]string{"/r/{roomId}/a", "/r/{roomId}/b", "/r/x/{id}", "/s/{id}"}); len(c) != 0 {
		t.Errorf("unexpected conflicts %v", c)
	}
	c := VariableConflicts([]string{"/r/{roomId}/a", "/r/{id}/b"})
	if len(c) != 1 || !strings.Contains(c[0], "{id}") || !strings.Contains(c[0], "{roomId}") {
		t.Errorf("conflicts %v", c)
	}
}

func TestNames(t *testing.T) {
	for name, kebab := range map[string]string{
		"ClientDiscovery": "client-discovery",
		"ClientAuth":      "client-auth",
		"FederationAPI":   "federation-api",
		"S3Media":         "s3-media",
		"Sync":            "sync",
	} {
		if got := Kebab(name); got != kebab {
			t.Errorf("Kebab(%q) = %q, want %q", name, got, kebab)
		}
	}
	if got := Camel("client-discovery"); got != "ClientDiscovery" {
		t.Errorf("Camel = %q", got)
	}
	if got := EventName("GET", "/_matrix/client/v3/rooms/{roomId}/messages"); got != "GetClientV3RoomsRoomIdMessages" {
		t.Errorf("EventName = %q", got)
	}
	if got := QueueEnvVar("cirrus-federation.fifo"); got != "CIRRUS_FEDERATION_QUEUE_URL" {
		t.Errorf("QueueEnvVar = %q", got)
	}
}

func TestMergeGlobals(t *testing.T) {
	tm := mustParse(t, `
Globals:
  Function:
    Timeout: 29
    Layers: [a]
    Environment:
      Variables: {A: "1", B: "2"}
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      Timeout: 10
      Layers: [b]
      Environment:
        Variables: {B: "3", C: !Ref X}
`)
	got := tm.MergeGlobals(tm.Resources["F"])
	want := map[string]any{
		"Timeout":     10,
		"Layers":      []any{"a", "b"},
		"Environment": map[string]any{"Variables": map[string]any{"A": "1", "B": "3", "C": map[string]any{"Ref": "X"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v", got, want)
	}
}

func TestDefinitionRoutes(t *testing.T) {
	tm := mustParse(t, `
Parameters:
  Origin: {Type: String, Default: ""}
Conditions:
  HasOrigin: !Not [!Equals [!Ref Origin, ""]]
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      DefinitionBody:
        openapi: 3.0.1
        paths:
          /up/{id}:
            parameters: []
            put:
              x-amazon-apigateway-integration: !If
                - HasOrigin
                - {type: http_proxy, httpMethod: PUT, uri: !Sub "${Origin}/up/{id}", payloadFormatVersion: "1.0"}
                - {type: aws_proxy, httpMethod: POST, uri: !Sub "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Fn.Arn}/invocations", payloadFormatVersion: "2.0"}
          /up:
            post:
              x-amazon-apigateway-integration: {type: aws_proxy, httpMethod: POST, uri: !Sub "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Fn.Arn}/invocations"}
  Fn: {Type: AWS::Serverless::Function}
`)
	routes := tm.DefinitionRoutes("Api")
	if len(routes) != 2 || routes[0].Method != "POST" || routes[0].Path != "/up" || routes[1].Method != "PUT" || routes[1].Path != "/up/{id}" {
		t.Fatalf("routes %+v", routes)
	}
	for _, tc := range []struct {
		origin string
		want   Integration
	}{
		{"", Integration{Type: "aws_proxy", Method: "POST", URI: "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/getatt:Fn.Arn/invocations", PayloadFormatVersion: "2.0", Function: "Fn"}},
		{"https://up.example.org", Integration{Type: "http_proxy", Method: "PUT", URI: "https://up.example.org/up/{id}", PayloadFormatVersion: "1.0"}},
	} {
		params, err := tm.ParamValues(map[string]any{"Origin": tc.origin})
		if err != nil {
			t.Fatal(err)
		}
		got, err := tm.ResolveIntegration(routes[1].Integration, &Env{Params: params})
		if err != nil || got != tc.want {
			t.Errorf("origin %q: %+v, %v; want %+v", tc.origin, got, err, tc.want)
		}
	}
	if _, err := tm.ResolveIntegration(map[string]any{"type": "aws_proxy"}, &Env{}); err == nil {
		t.Error("an integration without uri resolved")
	}
	if tm.DefinitionRoutes("Nope") != nil {
		t.Error("routes of a missing API")
	}
}
