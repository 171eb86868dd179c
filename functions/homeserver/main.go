// Command homeserver is the all-in-one Cirrus: every route and every worker
// in one process. With the embedded store it is `make run`; on AWS it is a
// valid single-function deployment (it detects the Lambda runtime).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cirrus-matrix/cirrus/infra/app"
	"github.com/cirrus-matrix/cirrus/infra/config"
	"github.com/cirrus-matrix/cirrus/infra/lambdahttp"
)

func main() {
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" {
		lambdahttp.Main()
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cirrus:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
	}
	log := app.NewLogger(cfg.LogLevel, false)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := app.Build(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	srv := &http.Server{Addr: cfg.ListenAddr, Handler: a.Server.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("cirrus homeserver listening", "server_name", cfg.Server.Client.ServerName, "addr", "http://"+cfg.ListenAddr, "storage", cfg.Storage, "data_dir", cfg.DataDir)
	// Federation: the HTTPS listener for other servers, and the sender
	// worker that delivers our events from the federation queue.
	fed, err := a.FederationServer()
	if err != nil {
		return err
	}
	if fed != nil {
		go func() { errc <- fed.ListenAndServeTLS("", "") }()
		log.Info("federation listening", "addr", "https://"+cfg.FederationListenAddr)
	}
	if cfg.Workers {
		go a.RunFederationSender(ctx)
		go a.RunFanout(ctx)
		go a.RunAppServiceSender(ctx)
	} else {
		log.Info("queue workers off (CIRRUS_WORKERS=false): the Lambda workers consume the queues")
	}
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if fed != nil {
			_ = fed.Shutdown(sctx)
		}
	}
	return nil
}
