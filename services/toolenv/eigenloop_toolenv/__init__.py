"""The toolenv service: domains over gRPC (ListDomains, DescribeDomain, Session)."""
