import shutil
from jobs.steps.validate import validate_day
from jobs.adapters.expectations import data_docs_site
from tests.test_validate import DAY, good_rows, land, named

PAYLOAD = "<img src=x onerror=alert(document.domain)>"

def test_probe(spark, settings):
    rows = good_rows()
    rows.loc[3, "quantity"] = PAYLOAD
    rows.loc[4, "description"] = "<script>alert(2)</script>"
    land(settings, named(rows))
    try:
        print(validate_day(DAY, settings, spark))
    except Exception as e:
        print("ERR", str(e)[:3000])
    shutil.rmtree("/tmp/bs_probe/site", ignore_errors=True)
    shutil.copytree(data_docs_site(settings), "/tmp/bs_probe/site")
    shutil.copytree(settings.path("validation_dir"), "/tmp/bs_probe/validation", dirs_exist_ok=True)
