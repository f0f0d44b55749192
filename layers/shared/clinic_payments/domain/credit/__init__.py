"""Account credit: the lots a balance is made of (`lots`) and the service that applies and
adjusts it (`service`)."""
