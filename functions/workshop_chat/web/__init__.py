"""The HTTP edge: routes, the request and stream protocol, sign-in and App Check, logs; every error
becomes a status here, in one table.
"""
