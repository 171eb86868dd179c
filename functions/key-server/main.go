// Command key-server is the Lambda publishing our signing keys and serving
// the key notary.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnKeyServer) }
