// Command federation-send is the Lambda receiving transactions from other
// servers (PUT /_matrix/federation/v1/send): the federation hot path.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnFederationSend) }
