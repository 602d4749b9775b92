//! The transport conformance suite over TCP (loopback) and the in-memory network.

mod tcp {
    shoal_remote::transport_conformance_tests!(async {
        std::sync::Arc::new(shoal_remote::TcpTransport::new())
            as std::sync::Arc<dyn shoal_remote::Transport>
    });
}

mod memory {
    use std::sync::Arc;

    use shoal_remote::MemoryNetwork;
    use shoal_remote::testing::LinkFaults;

    shoal_remote::transport_conformance_tests!(async { MemoryNetwork::new().transport() });

    shoal_remote::link_fault_conformance_tests!(async {
        let net = MemoryNetwork::new();
        (net.transport(), Arc::new(net) as Arc<dyn LinkFaults>)
    });
}
