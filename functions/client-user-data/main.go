// Command client-user-data is the Lambda for what users keep on the server
// and the ephemeral room data: filters, account data, tags, typing,
// receipts, read markers, presence and send-to-device.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnUserData) }
