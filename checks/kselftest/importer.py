"""placeholder, replaced below."""

def load_cases(path):
    raise NotImplementedError
