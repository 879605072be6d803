"""The Hubble wire API: .proto files written from Cilium's published names and numbers, and
the modules protoc generates from them (`make proto`, scripts/hubble_proto.py).

`flow.flow_pb2` (Flow, FlowFilter, enums), `relay.relay_pb2` (NodeStatusEvent),
`observer.observer_pb2` (requests and responses) and `observer.observer_grpc` (ObserverBase,
ObserverStub for grpclib). Generated files are never edited by hand.
"""
