"""HTTP glue shared by the handlers: request models, body parsing, the resolver with
its error mapping, and the request-level metrics. Handlers stay thin."""
