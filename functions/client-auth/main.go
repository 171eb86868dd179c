// Command client-auth is the Lambda serving registration, login, logout,
// refresh and whoami.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnAuth) }
