// grpc-info dials a kubelet plugin socket exactly the way the kubelet does (grpc.DialContext on
// the bare socket path with a unix context dialer, so the HTTP/2 :authority is the socket path)
// and calls one RPC:
//
//	grpc-info getinfo SOCKET   pluginregistration.Registration/GetInfo, printing
//	                           "type=<type> name=<name> endpoint=<endpoint> versions=<v,...>"
//	grpc-info prepare SOCKET   DRAPlugin/NodePrepareResources with no claims, printing "prepare=ok"
//
// It exits non-zero, with the gRPC error on stderr, when the RPC fails.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec sends and receives message bytes as they are: the request (InfoRequest) is empty and
// the reply is decoded with protowire, so no generated code is needed.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// dial mirrors k8s.io/kubernetes pkg/kubelet/pluginmanager/operationexecutor: the target is
// the bare path (passthrough resolver), so grpc-go sends the path as :authority.
func dial(ctx context.Context, path string) (*grpc.ClientConn, error) {
	return grpc.DialContext(ctx, path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}))
}

// pluginInfo decodes PluginInfo{type=1, name=2, endpoint=3, supported_versions=4 (repeated)}.
func pluginInfo(b []byte) (string, error) {
	fields := map[protowire.Number][]string{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return "", fmt.Errorf("unexpected field in PluginInfo")
		}
		b = b[n:]
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return "", fmt.Errorf("truncated PluginInfo")
		}
		fields[num] = append(fields[num], string(v))
		b = b[m:]
	}
	first := func(n protowire.Number) string {
		if len(fields[n]) == 0 {
			return ""
		}
		return fields[n][0]
	}
	return fmt.Sprintf("type=%s name=%s endpoint=%s versions=%s", first(1), first(2), first(3), strings.Join(fields[4], ",")), nil
}

func run() error {
	if len(os.Args) != 3 || (os.Args[1] != "getinfo" && os.Args[1] != "prepare") {
		return fmt.Errorf("usage: grpc-info getinfo|prepare SOCKET")
	}
	mode, path := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := dial(ctx, path)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", path, err)
	}
	defer conn.Close()
	req, reply := []byte{}, []byte{}
	if mode == "getinfo" {
		if err := conn.Invoke(ctx, "/pluginregistration.Registration/GetInfo", &req, &reply, grpc.ForceCodec(rawCodec{})); err != nil {
			return fmt.Errorf("GetInfo on %s: %w", path, err)
		}
		info, err := pluginInfo(reply)
		if err != nil {
			return err
		}
		fmt.Println(info)
		return nil
	}
	if err := conn.Invoke(ctx, "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources", &req, &reply, grpc.ForceCodec(rawCodec{})); err != nil {
		return fmt.Errorf("NodePrepareResources on %s: %w", path, err)
	}
	fmt.Println("prepare=ok")
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "grpc-info:", err)
		os.Exit(1)
	}
}
