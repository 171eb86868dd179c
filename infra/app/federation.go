package app

import (
	"context"
	"crypto/tls"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/infra/fedtls"
)

// FederationFunctions are the route-table functions the federation
// listener serves. Media is among them: the federation media endpoints are
// Media routes (binary answers), and servers that fall back to the legacy
// /_matrix/media/v3/download reach us at our federation address.
var FederationFunctions = []string{server.FnFederation, server.FnFederationSend, server.FnKeyServer, server.FnMedia}

// FederationHandler serves the server-server API and the key server only
// (the client API stays on its own listener).
func (a *App) FederationHandler() http.Handler {
	return a.Server.Handler(FederationFunctions...)
}

// FederationTLS is the federation listener's TLS configuration: the
// configured certificate, or a self-signed one.
func (a *App) FederationTLS() (*tls.Config, error) {
	c := a.Config
	return fedtls.Config(fedtls.Files{Cert: c.FederationTLSCert, Key: c.FederationTLSKey, CACert: c.FederationTLSCACert, CAKey: c.FederationTLSCAKey},
		c.Server.Client.ServerName)
}

// FederationServer builds the HTTPS server of CIRRUS_FEDERATION_LISTEN_ADDR
// (nil when it is not set); start it with ListenAndServeTLS("", "").
func (a *App) FederationServer() (*http.Server, error) {
	if a.Config.FederationListenAddr == "" {
		return nil, nil
	}
	tc, err := a.FederationTLS()
	if err != nil {
		return nil, err
	}
	return &http.Server{Addr: a.Config.FederationListenAddr, Handler: a.FederationHandler(), TLSConfig: tc,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 2 * time.Minute, WriteTimeout: 5 * time.Minute}, nil
}

// RunFederationSender runs the federation sender on the FederationQueue
// until ctx ends (the all-in-one's in-process worker).
func (a *App) RunFederationSender(ctx context.Context) {
	if f := a.Server.Federation(); f != nil {
		f.Sender.Run(ctx)
	}
}

// HandleFederationSQS is the FederationSender Lambda's handler: an SQS
// batch from the FederationQueue, handled per destination; messages not
// completed are reported as batch item failures (they stay on the queue,
// hidden for their backoff, and later messages of their group wait).
func (a *App) HandleFederationSQS(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	f := a.Server.Federation()
	var resp events.SQSEventResponse
	msgs := make([]queue.Received, 0, len(ev.Records))
	for _, r := range ev.Records {
		n, _ := strconv.Atoi(r.Attributes["ApproximateReceiveCount"])
		msgs = append(msgs, queue.Received{ID: r.MessageId, Body: []byte(r.Body), Group: r.Attributes["MessageGroupId"],
			Receipt: r.ReceiptHandle, ReceiveCount: n})
	}
	for _, id := range f.Sender.Handle(ctx, msgs) {
		resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: id})
	}
	return resp, nil
}
