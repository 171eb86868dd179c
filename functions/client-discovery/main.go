// Command client-discovery is the Lambda serving /versions, the
// .well-known files, capabilities and the login flows.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnDiscovery) }
