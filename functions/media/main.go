// Command media is the Lambda of the content repository: uploads,
// downloads (large ones redirect to presigned S3 URLs), thumbnails and URL
// previews. Uploads are limited by Lambda's payload limit (see core/mediaapi).
package main

import (
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() { lambdahttp.Main(server.FnMedia) }
