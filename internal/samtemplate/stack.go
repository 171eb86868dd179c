package samtemplate

import (
	"fmt"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/internal/deploycheck"
)

// This file is the content of the template: what it says about each part
// of the stack, and why.

func description() string {
	longest := 0
	for _, q := range queues {
		longest = max(longest, len(q.Name), len(q.DeadLetterName()))
	}
	return "Cirrus, a serverless Matrix homeserver: one Lambda function per endpoint family behind an HTTP API, " +
		"one DynamoDB table, an S3 media bucket and SQS FIFO queues. Generated from the route table " +
		"(core/server) and the resource definitions (core/resources) by `make template`. " +
		fmt.Sprintf("Queue names are \"<stack name>-<queue>\", so keep stack names to %d characters (SQS allows %d).",
			maxQueueName-1-longest, maxQueueName)
}

// parameter is one template parameter.
type parameter struct {
	name string
	body mapping
}

// parameterList is the template's parameters, in the order a deployer reads
// them.
var parameterList = []parameter{
	{"ServerName", mapping{
		{key: "Type", value: "String"},
		{key: "Description", value: folded("The Matrix server name (the part after \":\" in user ids), e.g. example.org. It cannot change once users exist.")},
		{key: "AllowedPattern", value: `(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?`},
		{key: "ConstraintDescription", value: "a host name or IP literal with an optional :port"},
	}},
	{"Registration", mapping{
		{key: "Type", value: "String"},
		{key: "Description", value: "Who may create accounts."},
		{key: "AllowedValues", value: flow{"open", "token", "closed"}},
		{key: "Default", value: "closed"},
	}},
	{"RegistrationTokens", mapping{
		{key: "Type", value: "String"},
		{key: "Description", value: "Comma-separated registration tokens (needed when Registration is token)."},
		{key: "NoEcho", value: true},
		{key: "Default", value: ""},
	}},
	{"RegistrationSharedSecret", mapping{
		{key: "Type", value: "String"},
		{key: "Description", value: folded("Turns on Synapse-compatible shared-secret registration (/_synapse/admin/v1/register, " +
			"e.g. register_new_matrix_user) to create accounts, admins included, even when Registration is closed. " +
			"At least 16 characters; empty turns it off.")},
		{key: "NoEcho", value: true},
		{key: "AllowedPattern", value: "|.{16,}"},
		{key: "ConstraintDescription", value: "empty, or at least 16 characters"},
		{key: "Default", value: ""},
	}},
	{"LogLevel", mapping{
		{key: "Type", value: "String"},
		{key: "AllowedValues", value: flow{"debug", "info", "warn", "error"}},
		{key: "Default", value: "info"},
	}},
	{"PublicBaseUrl", mapping{
		{key: "Type", value: "String"},
		{key: "Description", value: folded("Where clients reach this API, published in /.well-known/matrix/client. " +
			"Empty means https://<ServerName> (a custom domain mapped to the API). " +
			"Without a custom domain, deploy once and set this to the ApiUrl output. " +
			"(The functions cannot be given the API's own URL: the API's definition already depends on the functions, " +
			"so that would be a circular dependency.)")},
		{key: "Default", value: ""},
	}},
	{"WellKnownServer", mapping{
		{key: "Type", value: "String"},
		{key: "Description", value: folded("host:port published in /.well-known/matrix/server for federation delegation; empty answers 404 there.")},
		{key: "Default", value: ""},
	}},
	{"LocalEndpointUrl", mapping{
		{key: "Type", value: "String"},
		{key: "Description", value: folded("Only for `sam local` against LocalStack (see localstack/README.md), e.g. http://localstack:4566. " +
			"Leave empty when deploying to AWS.")},
		{key: "Default", value: ""},
	}},
}

func (g *generator) parameters() mapping {
	m := mapping{}
	for _, p := range parameterList {
		m.add(p.name, p.body)
	}
	for _, o := range g.usedOrigins() {
		p := o.parameter()
		m.add(p.name, p.body)
	}
	return m
}

func equals(a, b any) tagged { return tagged{"!Equals", flow{a, b}} }

func rules() mapping {
	return mapping{
		{key: "TokenRegistrationNeedsTokens", value: mapping{
			{key: "RuleCondition", value: equals(ref("Registration"), "token")},
			{key: "Assertions", value: list{mapping{
				{key: "Assert", value: tagged{"!Not", flow{equals(ref("RegistrationTokens"), "")}}},
				{key: "AssertDescription", value: "Registration=token needs at least one token in RegistrationTokens."},
			}}},
		}},
	}
}

func (g *generator) conditions() mapping {
	m := mapping{
		{key: "HasPublicBaseUrl", value: tagged{"!Not", flow{equals(ref("PublicBaseUrl"), "")}}},
		{key: "HasLocalEndpoint", value: tagged{"!Not", flow{equals(ref("LocalEndpointUrl"), "")}}},
	}
	for _, o := range g.usedOrigins() {
		m.add(o.Condition, tagged{"!Not", flow{equals(ref(o.Param), "")}})
	}
	return m
}

// globals holds what every function shares. Memory and timeout are set on
// each function instead (Functions), so each one reads complete.
func globals() mapping {
	env := mapping{
		{key: "CIRRUS_SERVER_NAME", value: ref("ServerName")},
		{key: "CIRRUS_STORAGE", value: "aws"},
		{key: "CIRRUS_TABLE", value: ref(TableID)},
		{key: "CIRRUS_MEDIA_BUCKET", value: ref(BucketID)},
	}
	for _, q := range queues {
		env.add(deploycheck.QueueEnvVar(q.Name), ref(queueID(q)))
	}
	env = append(env,
		field{key: "CIRRUS_REGISTRATION", value: ref("Registration")},
		field{key: "CIRRUS_REGISTRATION_TOKENS", value: ref("RegistrationTokens")},
		field{key: "CIRRUS_LOG_LEVEL", value: ref("LogLevel")},
		field{key: "CIRRUS_PUBLIC_BASEURL", value: tagged{"!If", flow{"HasPublicBaseUrl", ref("PublicBaseUrl"), sub("https://${ServerName}")}}},
		field{key: "CIRRUS_WELLKNOWN_SERVER", value: ref("WellKnownServer")},
		field{key: "AWS_ENDPOINT_URL", value: tagged{"!If", flow{"HasLocalEndpoint", ref("LocalEndpointUrl"), ref("AWS::NoValue")}}},
		field{key: "AWS_ENDPOINT_URL_S3", value: tagged{"!If", flow{"HasLocalEndpoint", ref("LocalEndpointUrl"), ref("AWS::NoValue")}}},
	)
	return mapping{
		{key: "Function", value: mapping{
			{key: "Runtime", value: "provided.al2023"},
			{key: "Architectures", value: flow{"arm64"}},
			{key: "Handler", value: "bootstrap"},
			{key: "Environment", value: mapping{{key: "Variables", value: env}}},
		}},
	}
}

func (g *generator) resources(fns []*function) mapping {
	m := mapping{}
	apiProps := mapping{
		{key: "Description", value: "Cirrus Matrix client and federation API"},
		{key: "FailOnWarnings", value: true},
	}
	if g.hasProxied() {
		apiProps.add("DefinitionBody", g.definitionBody())
	}
	api := m.add(APIID, mapping{
		{key: "Type", value: "AWS::Serverless::HttpApi"},
		{key: "Properties", value: apiProps},
	})
	api.comment = "One HTTP API for the client and federation endpoints. The functions set the CORS headers and " +
		"answer OPTIONS themselves, so no CORS configuration here: preflights match no route and go to the $default route."
	if g.hasProxied() {
		api.comment += " The DefinitionBody holds only the routes an origin parameter (" + originParams(g.usedOrigins()) +
			") can move: to the origin when it is set, else to their function; SAM adds every event's route to it."
	}

	for _, fn := range fns {
		f := m.add(fn.name, g.function(fn))
		f.comment = g.functionComment(fn)
		f.gap = true
	}
	g.proxiedPermissions(&m)

	t := m.add(TableID, tableResource())
	t.comment = "The one table (core/resources.Table). Kept when the stack is deleted."
	t.gap = true

	b := m.add(BucketID, bucketResource())
	b.comment = "Media. Private; browsers upload and download through presigned URLs, hence the CORS rule; " +
		"bytes of upload URLs never completed (" + resources.MediaIncomingPrefix + ") expire. Kept when the stack is deleted."
	b.gap = true

	bp := m.add(BucketPolicyID, bucketPolicyResource())
	bp.comment = "Refuse plain-HTTP access to the media bucket."
	bp.gap = true

	for i, q := range queues {
		main := m.add(queueID(q), queueResource(q))
		main.gap = true
		if i == 0 {
			main.comment = "Queues (core/resources.Queues), each with its dead-letter queue."
		}
		m.add(deadLetterID(q), deadLetterResource(q)).gap = true
	}
	return m
}

func (g *generator) functionComment(fn *function) string {
	var b strings.Builder
	dir := "functions/" + deploycheck.Kebab(fn.name)
	if fn.worker != nil {
		fmt.Fprintf(&b, "%s (%s, worker on %s)", fn.name, dir, fn.worker.Name)
	} else {
		n := fmt.Sprintf("%d routes", len(fn.routes))
		if len(fn.routes) == 1 {
			n = "1 route"
		}
		fmt.Fprintf(&b, "%s (%s, %s)", fn.name, dir, n)
	}
	if d := fn.description(g.in.Comments); d != "" {
		fmt.Fprintf(&b, ": %s", d)
	}
	b.WriteString(".")
	if fn.name == g.in.Default {
		b.WriteString(" Also API Gateway's $default route, i.e. every request that matches no route: " +
			"its router answers those 404/405 M_UNRECOGNIZED in the Matrix format, and OPTIONS preflights with the CORS headers.")
	}
	if fn.settings.Why != "" {
		b.WriteString(" " + fn.settings.Why)
	}
	return b.String()
}

func (g *generator) function(fn *function) mapping {
	props := mapping{{key: "CodeUri", value: "."}}
	if d := fn.description(g.in.Comments); d != "" {
		props.add("Description", d)
	}
	props.add("MemorySize", fn.memorySize())
	props.add("Timeout", fn.timeout())
	if n := fn.settings.ReservedConcurrency; n > 0 {
		props.add("ReservedConcurrentExecutions", n)
	}
	vars := mapping{}
	for _, v := range sortedKeys(fn.settings.Environment) {
		vars.add(v, ref(fn.settings.Environment[v]))
	}
	vars = append(vars, g.originEnvironment(fn)...)
	if len(vars) > 0 {
		props.add("Environment", mapping{{key: "Variables", value: vars}})
	}
	props.add("Policies", policies(fn))
	props.add("Events", g.events(fn))
	return mapping{
		{key: "Type", value: "AWS::Serverless::Function"},
		// sam build runs `make build-<logical id>` (build.mk).
		{key: "Metadata", value: mapping{{key: "BuildMethod", value: "makefile"}}},
		{key: "Properties", value: props},
	}
}

// policies: every function reads and writes the table and the media
// objects and sends to every queue; a worker also polls its own queue.
func policies(fn *function) list {
	l := list{mapping{{key: "DynamoDBCrudPolicy", value: mapping{{key: "TableName", value: ref(TableID)}}}}}
	for _, q := range queues {
		l = append(l, mapping{{key: "SQSSendMessagePolicy", value: mapping{{key: "QueueName", value: getAtt(queueID(q), "QueueName")}}}})
	}
	if fn.worker != nil {
		l = append(l, mapping{{key: "SQSPollerPolicy", value: mapping{{key: "QueueName", value: getAtt(queueID(*fn.worker), "QueueName")}}}})
	}
	l = append(l, mapping{{key: "Statement", value: list{
		mapping{
			{key: "Effect", value: "Allow"},
			{key: "Action", value: flow{"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}},
			{key: "Resource", value: sub("${" + BucketID + ".Arn}/*")},
		},
		mapping{
			{key: "Effect", value: "Allow"},
			{key: "Action", value: "s3:ListBucket"},
			{key: "Resource", value: getAtt(BucketID, "Arn")},
		},
	}}})
	return l
}

func (g *generator) events(fn *function) mapping {
	ev := mapping{}
	if fn.worker != nil {
		ev.add("Messages", mapping{
			{key: "Type", value: "SQS"},
			{key: "Properties", value: mapping{
				{key: "Queue", value: getAtt(queueID(*fn.worker), "Arn")},
				{key: "BatchSize", value: fn.batchSize()},
				// One bad message must not send its whole batch back.
				{key: "FunctionResponseTypes", value: flow{"ReportBatchItemFailures"}},
			}},
		})
		if fn.settings.Schedule != "" {
			ev.add("Sweep", mapping{
				{key: "Type", value: "Schedule"},
				{key: "Properties", value: mapping{{key: "Schedule", value: fn.settings.Schedule}}},
			})
		}
		return ev
	}
	if fn.name == g.in.Default {
		ev.add(DefaultEventName, mapping{
			{key: "Type", value: "HttpApi"},
			{key: "Properties", value: mapping{{key: "ApiId", value: ref(APIID)}}},
		})
	}
	for _, r := range fn.routes {
		ev.add(r.event, mapping{
			{key: "Type", value: "HttpApi"},
			{key: "Properties", value: mapping{
				{key: "ApiId", value: ref(APIID)},
				{key: "Method", value: r.method},
				{key: "Path", value: r.path},
			}},
		})
	}
	return ev
}

func keyList(pairs ...string) list {
	l := list{}
	for i := 0; i+1 < len(pairs); i += 2 {
		l = append(l, mapping{{key: "AttributeName", value: pairs[i]}, {key: "KeyType", value: pairs[i+1]}})
	}
	return l
}

func tableResource() mapping {
	attrs := list{}
	seen := map[string]bool{}
	for _, a := range []string{table.PK, table.SK, table.IndexPK, table.IndexSK} {
		if !seen[a] {
			seen[a] = true
			attrs = append(attrs, mapping{{key: "AttributeName", value: a}, {key: "AttributeType", value: "S"}})
		}
	}
	return mapping{
		{key: "Type", value: "AWS::DynamoDB::Table"},
		{key: "DeletionPolicy", value: "Retain"},
		{key: "UpdateReplacePolicy", value: "Retain"},
		{key: "Properties", value: mapping{
			{key: "BillingMode", value: "PAY_PER_REQUEST"},
			{key: "AttributeDefinitions", value: attrs},
			{key: "KeySchema", value: keyList(table.PK, "HASH", table.SK, "RANGE")},
			{key: "GlobalSecondaryIndexes", value: list{mapping{
				{key: "IndexName", value: table.Index},
				{key: "KeySchema", value: keyList(table.IndexPK, "HASH", table.IndexSK, "RANGE")},
				{key: "Projection", value: mapping{{key: "ProjectionType", value: "ALL"}}},
			}}},
			{key: "TimeToLiveSpecification", value: mapping{
				{key: "AttributeName", value: table.TTLAttr},
				{key: "Enabled", value: true},
			}},
			{key: "PointInTimeRecoverySpecification", value: mapping{{key: "PointInTimeRecoveryEnabled", value: true}}},
			{key: "SSESpecification", value: mapping{{key: "SSEEnabled", value: true}}},
		}},
	}
}

func bucketResource() mapping {
	return mapping{
		{key: "Type", value: "AWS::S3::Bucket"},
		{key: "DeletionPolicy", value: "Retain"},
		{key: "UpdateReplacePolicy", value: "Retain"},
		{key: "Properties", value: mapping{
			{key: "PublicAccessBlockConfiguration", value: mapping{
				{key: "BlockPublicAcls", value: true},
				{key: "BlockPublicPolicy", value: true},
				{key: "IgnorePublicAcls", value: true},
				{key: "RestrictPublicBuckets", value: true},
			}},
			{key: "OwnershipControls", value: mapping{{key: "Rules", value: list{
				mapping{{key: "ObjectOwnership", value: "BucketOwnerEnforced"}},
			}}}},
			{key: "BucketEncryption", value: mapping{{key: "ServerSideEncryptionConfiguration", value: list{
				mapping{{key: "ServerSideEncryptionByDefault", value: mapping{{key: "SSEAlgorithm", value: "AES256"}}}},
			}}}},
			{key: "CorsConfiguration", value: mapping{{key: "CorsRules", value: list{mapping{
				{key: "AllowedMethods", value: corsMethods()},
				{key: "AllowedOrigins", value: flow{quoted("*")}},
				{key: "AllowedHeaders", value: flow{quoted("*")}},
				{key: "ExposedHeaders", value: flow{"ETag", "Content-Length", "Content-Type", "Content-Disposition"}},
				{key: "MaxAge", value: 3600},
			}}}}},
			{key: "LifecycleConfiguration", value: mapping{{key: "Rules", value: list{
				mapping{
					{key: "Id", value: "AbortIncompleteUploads"},
					{key: "Status", value: "Enabled"},
					{key: "AbortIncompleteMultipartUpload", value: mapping{{key: "DaysAfterInitiation", value: 1}}},
				},
				// Bytes PUT to an MSC3870 upload URL whose upload was
				// never completed.
				mapping{
					{key: "Id", value: "ExpireUncompletedUploads"},
					{key: "Status", value: "Enabled"},
					{key: "Prefix", value: resources.MediaIncomingPrefix},
					{key: "ExpirationInDays", value: resources.MediaIncomingExpiryDays},
				},
			}}}},
		}},
	}
}

func corsMethods() flow {
	f := flow{}
	for _, m := range resources.MediaCORSMethods {
		f = append(f, m)
	}
	return f
}

func bucketPolicyResource() mapping {
	return mapping{
		{key: "Type", value: "AWS::S3::BucketPolicy"},
		{key: "Properties", value: mapping{
			{key: "Bucket", value: ref(BucketID)},
			{key: "PolicyDocument", value: mapping{
				{key: "Version", value: "2012-10-17"},
				{key: "Statement", value: list{mapping{
					{key: "Sid", value: "DenyInsecureTransport"},
					{key: "Effect", value: "Deny"},
					{key: "Principal", value: quoted("*")},
					{key: "Action", value: quoted("s3:*")},
					{key: "Resource", value: list{getAtt(BucketID, "Arn"), sub("${" + BucketID + ".Arn}/*")}},
					{key: "Condition", value: mapping{{key: "Bool", value: mapping{
						{key: "aws:SecureTransport", value: quoted("false")},
					}}}},
				}}},
			}},
		}},
	}
}

func seconds(d time.Duration) int { return int(d / time.Second) }

// queueProps are the properties a queue and its dead-letter queue share.
func queueProps(q queue.Spec, name string) mapping {
	m := mapping{{key: "QueueName", value: sub("${AWS::StackName}-" + name)}}
	if q.FIFO {
		m.add("FifoQueue", true)
		// Senders set deduplication ids.
		m.add("ContentBasedDeduplication", false)
	}
	return m
}

func queueResource(q queue.Spec) mapping {
	p := queueProps(q, q.Name)
	p = append(p,
		field{key: "VisibilityTimeout", value: seconds(q.VisibilityTimeout)},
		field{key: "MessageRetentionPeriod", value: seconds(q.Retention)},
		field{key: "SqsManagedSseEnabled", value: true},
		field{key: "RedrivePolicy", value: mapping{
			{key: "deadLetterTargetArn", value: getAtt(deadLetterID(q), "Arn")},
			{key: "maxReceiveCount", value: q.MaxReceives},
		}},
	)
	return mapping{{key: "Type", value: "AWS::SQS::Queue"}, {key: "Properties", value: p}}
}

func deadLetterResource(q queue.Spec) mapping {
	p := queueProps(q, q.DeadLetterName())
	p = append(p,
		field{key: "MessageRetentionPeriod", value: seconds(DeadLetterRetention)},
		field{key: "SqsManagedSseEnabled", value: true},
	)
	return mapping{{key: "Type", value: "AWS::SQS::Queue"}, {key: "Properties", value: p}}
}

func outputs() mapping {
	m := mapping{
		{key: "ApiUrl", value: mapping{
			{key: "Description", value: "The API's own URL (set PublicBaseUrl to it if you have no custom domain)"},
			{key: "Value", value: sub("https://${" + APIID + "}.execute-api.${AWS::Region}.${AWS::URLSuffix}/")},
		}},
		{key: "TableName", value: mapping{{key: "Value", value: ref(TableID)}}},
		{key: "MediaBucketName", value: mapping{{key: "Value", value: ref(BucketID)}}},
	}
	for _, q := range queues {
		m.add(queueID(q)+"Url", mapping{{key: "Value", value: ref(queueID(q))}})
		m.add(deadLetterID(q)+"Url", mapping{{key: "Value", value: ref(deadLetterID(q))}})
	}
	return m
}
