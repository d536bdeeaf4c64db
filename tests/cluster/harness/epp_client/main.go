// epp-client plays Envoy's part for one request: it opens an ext_proc stream to an endpoint picker, sends
// the request's headers and its body (an OpenAI completion), and prints the endpoint the picker chose,
// as the x-gateway-destination-endpoint header it sets. The cluster tier builds it beside the picker
// (tests/cluster/harness/epp.py), from the same module graph.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const destination = "x-gateway-destination-endpoint"

func main() {
	addr := flag.String("addr", "127.0.0.1:9002", "the picker's ext_proc address (plaintext)")
	model := flag.String("model", "", "the request's model")
	prompt := flag.String("prompt", "", "the request's prompt")
	timeout := flag.Duration("timeout", 20*time.Second, "give up after")
	flag.Parse()
	endpoint, err := pick(*addr, *model, *prompt, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "epp-client:", err)
		os.Exit(1)
	}
	fmt.Println(endpoint)
}

func pick(addr, model, prompt string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(map[string]any{"model": model, "prompt": prompt, "max_tokens": 16})
	if err != nil {
		return "", err
	}
	headers := []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("POST")},
		{Key: ":path", RawValue: []byte("/v1/completions")},
		{Key: ":authority", RawValue: []byte("gateway")},
		{Key: "content-type", RawValue: []byte("application/json")},
	}
	requests := []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: headers}},
		}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true},
		}},
	}
	for _, request := range requests {
		if err := stream.Send(request); err != nil {
			return "", err
		}
	}
	// The picker answers the headers once it has the body and chose: the header mutation names the pod.
	for {
		response, err := stream.Recv()
		if err != nil {
			return "", err
		}
		if immediate := response.GetImmediateResponse(); immediate != nil {
			return "", fmt.Errorf("the picker refused the request: %v %s", immediate.GetStatus(), immediate.GetBody())
		}
		common := response.GetRequestHeaders().GetResponse()
		for _, option := range common.GetHeaderMutation().GetSetHeaders() {
			if option.GetHeader().GetKey() == destination {
				_ = stream.CloseSend()
				return string(option.GetHeader().GetRawValue()), nil
			}
		}
	}
}
