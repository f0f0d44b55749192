"""`python -m local.stripe_compat --port N`: serve localstripe-compat on 127.0.0.1:N."""

from local.stripe_compat.server import main

if __name__ == "__main__":
    main()
