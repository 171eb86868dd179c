// Starts the local-aws-sqs stand-in on 127.0.0.1:$PORT (JSON protocol, as aws-sdk-go-v2 speaks it).
const { createSqsServer } = require("local-aws-sqs");
const port = Number(process.env.PORT || 9324);
createSqsServer({ port, hostname: "127.0.0.1" }).then(() => {
  console.log(`local-aws-sqs listening on 127.0.0.1:${port}`);
});
