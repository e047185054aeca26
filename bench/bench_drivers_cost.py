"""What drivers cost a served model: training time and GET predict latency with drivers against the same
model without them, and explanations against a plain predict, through a runtime subprocess over HTTP.

The data is the default spicepod's Chicago ridership (three years, daily, the last 14 days carrying only
drivers); both models are LightGBM alone with the same lookback, horizon and trees, so the ratios are the
drivers' own cost. Run: .venv/bin/python -m bench.bench_drivers_cost
"""

from __future__ import annotations

import json

from bench.common import DATA, Runtime, TempDir, header, median, ms, ratio_line, size, table, time_calls

TRAIN_RUNS = size(3, 1)
WARM_RUNS = size(2000, 20)
COMPUTED_RUNS = size(200, 5)
ROUNDS = size(200, 10)

COVARIATES = """[temp, percip, weather_rain, weather_snow, {column: Bulls_Home, type: categorical},
              {column: Bears_Home, type: categorical}, {column: Blackhawks_Home, type: categorical},
              {column: WhiteSox_Home, type: categorical}, {column: Cubs_Home, type: categorical}]"""

SPICEPOD = f"""
version: v1
kind: Spicepod
name: drivers-cost
datasets:
  - {{from: file:{DATA / 'covariates' / 'chicago_ridership_recent.csv'}, name: ridership, time_column: date}}
models:
  - from: lightgbm
    name: with_drivers
    datasets: [ridership]
    params:
      value_column: ridership
      lookback: 28
      horizon: 14
      method: lightgbm
      covariates: {COVARIATES}
      calendar: [day_of_week, day_of_year]
      holidays: {{country: US, subdivision: IL}}
      lightgbm: {{num_boost_round: {ROUNDS}}}
  - from: lightgbm
    name: without
    datasets: [ridership]
    params:
      value_column: ridership
      lookback: 28
      horizon: 14
      method: lightgbm
      lightgbm: {{num_boost_round: {ROUNDS}}}
"""


def main() -> None:
    header("bench.bench_drivers_cost", "drivers: training and predict cost, explanations")
    with TempDir("fc-drivers-cost-") as folder, Runtime(SPICEPOD, folder) as rt:
        rt.start()
        rt.wait_ready(600)

        def train(name: str) -> None:
            response = rt.post(f"/v1/models/{name}/train", b"", timeout=600)
            assert response.status == 200, response.body[:300]

        training = {name: median(time_calls(lambda n=name: train(n), TRAIN_RUNS, warmup=0))
                    for name in ("without", "with_drivers")}

        def get(path: str) -> None:
            response = rt.get(path)
            assert response.status == 200, response.body[:300]

        warm = {name: median(time_calls(lambda n=name: get(f"/v1/models/{n}/predict"), WARM_RUNS, warmup=5))
                for name in ("without", "with_drivers")}
        warm_explain = median(time_calls(lambda: get("/v1/models/with_drivers/predict?explain=true"), WARM_RUNS,
                                         warmup=5))
        # A request's own covariates make a forecast that is never cached: computed on every call.
        stamps = rt.get_json("/v1/models/with_drivers/predict")["timestamps"]
        sent = {"timestamps": stamps, "temp": [70.0] * len(stamps)}

        def post(explain: bool) -> None:
            item = {"model_name": "with_drivers", "covariates": sent, "explain": explain}
            response = rt.post("/v1/predict", json.dumps({"predictions": [item]}).encode())
            body = json.loads(response.body)["predictions"][0]
            assert body["status"] == "Success", body

        computed = median(time_calls(lambda: post(False), COMPUTED_RUNS, warmup=3))
        computed_explain = median(time_calls(lambda: post(True), COMPUTED_RUNS, warmup=3))

    table(["measure", "without drivers", "with drivers"], [
        ["training (s, median)", training["without"], training["with_drivers"]],
        ["warm GET predict p50 (ms)", ms(warm["without"]), ms(warm["with_drivers"])],
    ])
    table(["measure", "plain", "explain=true"], [
        ["warm GET predict p50 (ms)", ms(warm["with_drivers"]), ms(warm_explain)],
        ["computed POST predict p50 (ms)", ms(computed), ms(computed_explain)],
    ])
    ratio_line("training time, with drivers / without", training["with_drivers"] / training["without"], "<= 1.3x",
               training["with_drivers"] / training["without"] <= 1.3)
    ratio_line("warm GET predict p50, with drivers / without", warm["with_drivers"] / warm["without"], "<= 1.3x",
               warm["with_drivers"] / warm["without"] <= 1.3)
    ratio_line("warm GET predict p50, explain=true / plain", warm_explain / warm["with_drivers"], "<= 1.5x",
               warm_explain / warm["with_drivers"] <= 1.5)
    ratio_line("computed predict p50 (never cached), explain=true / plain", computed_explain / computed, "<= 1.5x",
               computed_explain / computed <= 1.5)


if __name__ == "__main__":
    main()
