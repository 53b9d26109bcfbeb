//! `wharf canary`: submits a uniquely identified document through the web role and waits until the worker has landed it in S3.
