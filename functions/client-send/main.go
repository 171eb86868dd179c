// Command client-send is the Lambda on the write hot path: sending
// messages, setting state, redacting.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnSend) }
