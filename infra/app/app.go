// Package app wires a Cirrus process together: it reads the configuration,
// opens the storage engine it names (embedded files, or DynamoDB/S3/SQS) and
// builds the core server on those adapters. functions/*/main.go call Build
// and hand the result to HTTP or Lambda.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	s3sdk "github.com/aws/aws-sdk-go-v2/service/s3"
	sqssdk "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cirrus-matrix/cirrus/core/blob"
	"github.com/cirrus-matrix/cirrus/core/federation"
	"github.com/cirrus-matrix/cirrus/core/migrate"
	"github.com/cirrus-matrix/cirrus/core/queue"
	"github.com/cirrus-matrix/cirrus/core/resources"
	"github.com/cirrus-matrix/cirrus/core/server"
	"github.com/cirrus-matrix/cirrus/core/signing"
	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
	"github.com/cirrus-matrix/cirrus/infra/boltqueue"
	"github.com/cirrus-matrix/cirrus/infra/config"
	"github.com/cirrus-matrix/cirrus/infra/dynamo"
	"github.com/cirrus-matrix/cirrus/infra/keyfile"
	"github.com/cirrus-matrix/cirrus/infra/localfs"
	s3store "github.com/cirrus-matrix/cirrus/infra/s3"
	sqsqueue "github.com/cirrus-matrix/cirrus/infra/sqs"
)

// App is a built process: the server and the adapters under it.
type App struct {
	Config *config.Config
	Server *server.Server
	Log    *slog.Logger
	Table  table.Table
	Blobs  blob.Store
	// Queues by resources spec name.
	Queues  map[string]queue.Queue
	closers []func() error
}

// Close releases the adapters (the embedded database file, above all).
func (a *App) Close() error {
	var first error
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// NewLogger returns the process logger at the configured level: JSON for
// Lambda (CloudWatch parses it), text on a terminal.
func NewLogger(level string, json bool) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if json {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// Build opens storage and builds the server.
func Build(ctx context.Context, cfg *config.Config, log *slog.Logger) (*App, error) {
	a := &App{Config: cfg, Log: log, Queues: map[string]queue.Queue{}}
	var keys signing.Store
	var err error
	switch cfg.Storage {
	case config.StorageEmbedded:
		keys, err = a.openEmbedded(cfg)
	case config.StorageAWS:
		keys, err = a.openAWS(ctx, cfg)
	default:
		err = fmt.Errorf("unknown storage %q", cfg.Storage)
	}
	if err != nil {
		a.Close()
		return nil, err
	}
	if err := migrate.Up(ctx, a.Table, migrate.Steps); err != nil {
		a.Close()
		return nil, err
	}
	key, err := signing.LoadOrCreate(ctx, keys)
	if err != nil {
		a.Close()
		return nil, err
	}
	if cfg.RotateSigningKeyFrom != "" && string(key.ID) == cfg.RotateSigningKeyFrom {
		old := key.ID
		if key, err = federation.RotateKey(ctx, a.Table, keys, key, time.Now()); err != nil {
			a.Close()
			return nil, fmt.Errorf("rotating the signing key: %w", err)
		}
		log.Warn("signing key rotated", "old", old, "new", key.ID)
	}
	a.Server, err = server.New(cfg.Server, server.Deps{Table: a.Table, Blobs: a.Blobs, SigningKey: key, Log: log,
		FederationQueue: a.Queues[resources.FederationQueue.Name], FanoutQueue: a.Queues[resources.FanoutQueue.Name],
		AppServiceQueue: a.Queues[resources.AppServiceQueue.Name]})
	if err != nil {
		a.Close()
		return nil, err
	}
	if cfg.RegistrationWarning != "" {
		log.Warn(cfg.RegistrationWarning)
	}
	for _, w := range cfg.FederationWarnings {
		log.Warn("!!! " + w + " !!!")
	}
	return a, nil
}

func (a *App) openEmbedded(cfg *config.Config) (signing.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("CIRRUS_DATA_DIR=%q: %w", cfg.DataDir, err)
	}
	db, err := bolt.Open(filepath.Join(cfg.DataDir, "cirrus.db"))
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, db.Close)
	a.Table = db.Table()
	for _, spec := range resources.Queues {
		q, err := boltqueue.New(db.Bolt(), spec)
		if err != nil {
			return nil, err
		}
		a.Queues[spec.Name] = q
	}
	if a.Blobs, err = localfs.New(filepath.Join(cfg.DataDir, "media")); err != nil {
		return nil, err
	}
	return keyfile.Store{Path: filepath.Join(cfg.DataDir, "signing.key")}, nil
}

// AWSClients are the SDK clients, built from the default credential chain
// and the standard AWS_ENDPOINT_URL_<SERVICE> overrides (LocalStack, the
// local stand-ins).
type AWSClients struct {
	Dynamo *dynamodb.Client
	S3     *s3sdk.Client
	SQS    *sqssdk.Client
}

// NewAWSClients loads the default AWS configuration.
func NewAWSClients(ctx context.Context) (*AWSClients, aws.Config, error) {
	ac, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, ac, fmt.Errorf("AWS configuration: %w", err)
	}
	return &AWSClients{
		Dynamo: dynamodb.NewFromConfig(ac),
		S3: s3sdk.NewFromConfig(ac, func(o *s3sdk.Options) {
			// Emulators (and LocalStack) need path-style bucket addressing.
			o.UsePathStyle = os.Getenv("AWS_ENDPOINT_URL_S3") != ""
		}),
		SQS: sqssdk.NewFromConfig(ac),
	}, ac, nil
}

func (a *App) openAWS(ctx context.Context, cfg *config.Config) (signing.Store, error) {
	c, _, err := NewAWSClients(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.CreateAWSResources {
		if err := dynamo.EnsureTable(ctx, c.Dynamo, cfg.Table, resources.Table); err != nil {
			return nil, err
		}
	}
	a.Table = dynamo.New(c.Dynamo, cfg.Table)
	urls := map[string]string{
		resources.FederationQueue.Name: cfg.FederationQueueURL,
		resources.FanoutQueue.Name:     cfg.FanoutQueueURL,
		resources.AppServiceQueue.Name: cfg.AppServiceQueueURL,
	}
	for _, spec := range resources.Queues {
		url := urls[spec.Name]
		if cfg.CreateAWSResources && url == "" {
			if url, _, err = sqsqueue.EnsureQueue(ctx, c.SQS, spec); err != nil {
				return nil, err
			}
		}
		a.Queues[spec.Name] = sqsqueue.New(c.SQS, url, spec)
	}
	if cfg.CreateAWSResources {
		if err := s3store.EnsureBucket(ctx, c.S3, cfg.MediaBucket); err != nil {
			return nil, err
		}
	}
	a.Blobs = s3store.New(c.S3, cfg.MediaBucket)
	return signing.TableStore{T: a.Table}, nil
}
