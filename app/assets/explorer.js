// Filters changed: drop the customer table's cached blocks so it asks the server again.
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  segmentExplorer: {
    purgeGrid: function () {
      try {
        dash_ag_grid.getApi("customer-grid").purgeInfiniteCache();
      } catch (notRendered) {
        // the Customers tab is not open: the grid fetches fresh rows when it is shown
      }
      return Date.now();
    },
  },
});
