// Command client-sync is the Lambda that serves only /sync: it holds
// long-polls open, so it stays small and does nothing else.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnSync) }
