"""The role UIs (prosecutor's office, care provider, auditor): server-rendered pages."""
