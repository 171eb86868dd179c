// Command client-timeline is the Lambda that reads room timelines: single
// events, /messages, /context and relations.
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnTimeline) }
