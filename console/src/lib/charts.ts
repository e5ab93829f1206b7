/**
 * Chart.js, registered with only what the Analytics panel draws.
 *
 * Imported dynamically by panels/Analytics.tsx, so Chart.js is a chunk of its
 * own that only the Analytics panel downloads; the explicit registration lets
 * the bundler drop the chart types and plugins the console never uses.
 */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  RadarController,
  RadialLinearScale,
  Tooltip,
} from 'chart.js';

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  RadarController,
  RadialLinearScale,
  Tooltip,
);

// Deterministic and quiet: no animation (screenshots and tests see the final chart).
Chart.defaults.animation = false;
Chart.defaults.font.family = getComputedStyle(document.body).fontFamily || 'system-ui, sans-serif';

export { Chart };
export type { ChartConfiguration } from 'chart.js';
