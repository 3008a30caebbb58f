def pytest_addoption(parser):
    parser.addoption("--flags", default="", help="space-separated notebook test flags to run (e.g. 'gpu slow')")


def pytest_collection_modifyitems(config, items):
    "The docs site test goes last: it renders the notebook runs that the notebook tests keep."
    items.sort(key=lambda item: item.path.name == "test_docs_site.py")
