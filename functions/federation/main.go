// Command federation is the Lambda serving other servers: events and
// state, joins, leaves, invites and queries.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnFederation) }
