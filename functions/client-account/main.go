// Command client-account is the Lambda serving devices, password changes,
// account deactivation, third-party identifiers and profiles.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnAccount) }
