// Command client-rooms is the Lambda serving room creation, membership,
// state reads and aliases.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnRooms) }
