// Command client-keys is the Lambda for end-to-end encryption: device
// keys, one-time keys, cross-signing, device-list changes and key backups.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnKeys) }
